//! Releasing the probes without making the user wait, and without disturbing another session.
//!
//! Unregistering a uprobe costs about 0.1 s on these kernels, one after another, so a trace
//! that armed a few CUDA/NVML libraries would spend seconds exiting after its output is
//! complete: a child holds the last references to the BPF objects and closes them once the
//! session has dropped its own.
//!
//! Registering a uprobe while another session's are being unregistered waits for them: a
//! process the kernel stopped for arming stayed stopped for up to 2 s. Sessions therefore hold
//! a shared lock on `LOCK_FILE` while tracing, and the release takes it exclusively: it waits
//! until no other session is tracing, releases every probe, and only then lets the lock go; a
//! new session waits (and says so) while a release is under way.
use std::fs::File;
use std::os::fd::{AsRawFd as _, OwnedFd};

use nix::unistd::{ForkResult, fork, setsid};

pub const LOCK_FILE: &str = "/run/vgpu-trace.lock";

/// Held for the whole session (shared with other sessions). A plain file with a `flock` on
/// it: closing a descriptor does not unlock while the release child still holds the file.
pub struct SessionLock(Option<File>);

impl SessionLock {
    /// Waits while another session's probes are being released.
    pub fn acquire() -> Self {
        let started = std::time::Instant::now();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .and_then(|f| {
                // SAFETY: flock on a descriptor this File owns.
                match unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } {
                    0 => Ok(f),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        if started.elapsed() > std::time::Duration::from_millis(100) {
            eprintln!(
                "vgpu-trace: waited {:.1} s for an earlier session's probes to be released",
                started.elapsed().as_secs_f64()
            );
        }
        match lock {
            Ok(file) => Self(Some(file)),
            Err(e) => {
                tracing::debug!("{LOCK_FILE}: {e}; sessions are not coordinated");
                Self(None)
            }
        }
    }
}

/// Dropped after the session's BPF objects: the release child then holds the last references
/// and begins.
pub struct Release {
    _go: Option<OwnedFd>,
}

/// Call last, with every output written and flushed; drop the backend, then the result.
pub fn in_background(lock: SessionLock) -> Release {
    let lock_fd = lock.0.as_ref().map(|f| f.as_raw_fd());
    // The child waits for end-of-file here: the session has dropped its references.
    let Ok((wait, go)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        tracing::debug!("releasing probes in the foreground: no pipe");
        return Release { _go: None };
    };
    // SAFETY: the child only makes async-signal-safe calls (setsid, close, flock, read,
    // close_range, _exit), as required after fork in a multi-threaded process.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = setsid();
            drop(go);
            // Let nobody wait on our pipes: the trace is over.
            for fd in 0..3 {
                let _ = nix::unistd::close(fd);
            }
            // SAFETY: raw syscalls on descriptors this child owns.
            unsafe {
                // Exclusive from now on, so that no new session starts (and arms) before these
                // probes are gone; the session's lock is this same open file, so this waits
                // only for other sessions still tracing.
                if let Some(fd) = lock_fd {
                    libc::flock(fd, libc::LOCK_EX);
                }
                let mut byte = 0u8;
                while libc::read(wait.as_raw_fd(), (&raw mut byte).cast(), 1) < 0
                    && *libc::__errno_location() == libc::EINTR
                {}
                // Every descriptor but the lock's: a close's release work is done before
                // the syscall returns, so the lock goes last, at _exit.
                let keep = lock_fd.unwrap_or(2).max(2) as libc::c_uint;
                libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, keep - 1, 0);
                libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0);
                libc::_exit(0)
            }
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(wait);
            // Closing our descriptor leaves the lock with the child.
            drop(lock);
            Release { _go: Some(go) }
        }
        Err(e) => {
            tracing::debug!("releasing probes in the foreground: fork failed: {e}");
            Release { _go: None }
        }
    }
}
