module gostorm
go 1.19
