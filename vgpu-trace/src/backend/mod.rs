//! Backends produce raw events and nothing else. `ebpf` is the primary one.
pub mod ebpf;
