//! Releasing the probes without making the user wait, and without disturbing another session.
//!
//! Unregistering a uprobe costs about 0.1 s on these kernels, one after another, so a trace
//! that armed a few CUDA/NVML libraries would spend seconds exiting after its output is
//! complete: a child holds the last references to the BPF objects and lets the kernel release
//! them after this process has exited.
//!
//! Unregistering uprobes on a function (libc's dlopen) while another session's traced thread is
//! held stopped inside that function can make the kernel drop that thread's pending return
//! probe, so the dlopen never returns in the other trace. Sessions therefore hold a shared lock
//! on `LOCK_FILE` while tracing, and the release takes it exclusively: it waits until no session
//! is tracing, and a new session waits while a release is under way.
use std::fs::File;
use std::os::fd::AsRawFd as _;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{ForkResult, Pid, fork, getppid, setsid};

pub const LOCK_FILE: &str = "/run/vgpu-trace.lock";

/// Held for the whole session (shared with other sessions).
pub struct SessionLock(Option<Flock<File>>);

impl SessionLock {
    /// Waits while another session's probes are being released.
    pub fn acquire() -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE);
        let lock = file.and_then(|f| {
            Flock::lock(f, FlockArg::LockShared).map_err(|(_, e)| std::io::Error::from(e))
        });
        match lock {
            Ok(lock) => Self(Some(lock)),
            Err(e) => {
                tracing::debug!("{LOCK_FILE}: {e}; sessions are not coordinated");
                Self(None)
            }
        }
    }
}

/// Call last, with every output written and flushed.
pub fn in_background(lock: SessionLock) {
    let parent = std::process::id();
    let lock_fd = lock.0.as_ref().map(|l| l.as_raw_fd());
    // SAFETY: the child only makes async-signal-safe calls (setsid, close, getppid, flock,
    // nanosleep, _exit), as required after fork in a multi-threaded process.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = setsid();
            // Let nobody wait on our pipes: the trace is over.
            for fd in 0..3 {
                let _ = nix::unistd::close(fd);
            }
            // Outlive the parent, so that its exit only drops references and ours is the last.
            while getppid() == Pid::from_raw(parent as i32) {
                let nap = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                };
                // SAFETY: plain nanosleep with a valid timespec.
                unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
            }
            if let Some(fd) = lock_fd {
                // SAFETY: flock on the inherited lock file descriptor; converts our shared lock.
                unsafe { libc::flock(fd, libc::LOCK_EX) };
            }
            // SAFETY: _exit ends the child without running the parent's destructors; the kernel
            // releases the probes, then the lock.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { .. }) => drop(lock),
        Err(e) => tracing::debug!("releasing probes in the foreground: fork failed: {e}"),
    }
}
