//! Backends produce raw events and nothing else. `ebpf` is the primary one; `ptrace` serves
//! where the kernel refuses BPF.
use std::os::fd::RawFd;

use crate::event::RawEvent;

pub mod ebpf;
pub(crate) mod launch;
pub mod ptrace;

/// The signals a terminal or a `kill` meant for the session sends, which its helpers that
/// outlive it (the hold guard, the ptrace engine) must not die of.
pub const SESSION_SIGNALS: [libc::c_int; 10] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGPIPE,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

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
