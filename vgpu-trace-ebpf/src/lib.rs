#![no_std]
// The programs live in the `vgpu-trace` binary target (src/main.rs); this stub keeps
// `cargo_metadata` and workspace tooling happy.
