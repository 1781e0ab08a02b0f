// gostorm WORKERS SECONDS: WORKERS goroutines dlopen libm.so.6, dlsym cos and dlclose it
// (through cgo, on whatever threads the Go runtime gives them) for SECONDS, sleeping a
// microsecond between rounds so that goroutines park and move between threads as a Go
// server's do. Prints `calls=N ok`: the ground truth a trace is held against.
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
static int probe(const char *lib, const char *sym) {
    void *h = dlopen(lib, RTLD_NOW);
    if (!h) return 0;
    int ok = dlsym(h, sym) != 0;
    dlclose(h);
    return ok;
}
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

func main() {
	workers, _ := strconv.Atoi(os.Args[1])
	seconds, _ := strconv.Atoi(os.Args[2])
	lib := C.CString("libm.so.6")
	sym := C.CString("cos")
	defer C.free(unsafe.Pointer(lib))
	defer C.free(unsafe.Pointer(sym))
	var calls int64
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if C.probe(lib, sym) != 1 {
					panic("probe failed")
				}
				atomic.AddInt64(&calls, 1)
				// Goroutines park and move between threads, as a Go server's do.
				time.Sleep(time.Microsecond)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("calls=%d ok\n", calls)
}
