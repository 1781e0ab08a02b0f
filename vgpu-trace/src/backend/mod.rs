//! Backends produce raw events and nothing else. `ebpf` is the primary one; `ptrace` serves
//! where the kernel refuses BPF.
use std::os::fd::RawFd;

use crate::event::RawEvent;

pub mod ebpf;
pub mod ptrace;

/// What the event loop reads, whichever backend produces it.
pub trait Source {
    /// Moves up to `max` waiting events into `out`; returns how many (fewer: none left).
    fn drain(&mut self, out: &mut Vec<RawEvent>, max: usize) -> usize;
    /// Readable when events wait.
    fn fd(&self) -> RawFd;
    /// Events the backend knows it lost so far.
    fn lost(&self) -> u64;
    /// A second stream of diagnostics (the eBPF programs' log), and its forwarding.
    fn log_fd(&self) -> Option<RawFd> {
        None
    }
    fn flush_logs(&mut self) {}
}
