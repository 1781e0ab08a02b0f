//! Releasing perf-event uprobes (kernels before 6.6) off everyone's path. Each one's release
//! waits for grace periods of its own, serially, under the kernel's `event_mutex`: a dozen take
//! a second or more. So the session hands them to a detached process that closes them one at a
//! time and exits, and the session ends at once. A session that attaches perf-event uprobes
//! meanwhile would queue behind each release for that mutex: it takes the lock file
//! exclusively while it attaches, and the releaser closes a probe only under a shared lock, so
//! an attach usually waits for the one release under way. Neither side waits for the lock more
//! than `PATIENCE`: a session stopped while it holds the lock delays others by that, no more.
use std::{
    fs::File,
    os::fd::{AsRawFd as _, RawFd},
};

/// Held exclusively while a session attaches perf-event uprobes, shared around each release.
pub const LOCK_FILE: &str = "/run/vgpu-trace.lock";

/// The longest either side waits for the lock before it goes on without it.
const PATIENCE_MS: u32 = 1000;
/// How often a waiting side tries the lock again.
const RETRY_MS: u32 = 5;

/// Takes `operation` (LOCK_EX or LOCK_SH) on `fd`, trying every `RETRY_MS` for at most
/// `PATIENCE_MS`; whether it was had. Only async-signal-safe calls: the releaser uses it after
/// fork.
fn lock_within(fd: RawFd, operation: libc::c_int) -> bool {
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: RETRY_MS as libc::c_long * 1_000_000,
    };
    for _ in 0..PATIENCE_MS / RETRY_MS {
        // SAFETY: flock and nanosleep on a descriptor and a timespec of ours.
        unsafe {
            if libc::flock(fd, operation | libc::LOCK_NB) == 0 {
                return true;
            }
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
    false
}

/// The lock file, held exclusively until dropped; nothing when it cannot be had (the attach
/// then only risks waiting on a release).
pub struct AttachLock(#[allow(dead_code, reason = "held for its lock")] Option<File>);

impl AttachLock {
    pub fn take() -> Self {
        let file = open_lock().filter(|f| {
            let had = lock_within(f.as_raw_fd(), libc::LOCK_EX);
            if !had {
                tracing::debug!("{LOCK_FILE}: still held after {PATIENCE_MS} ms; attaching anyway");
            }
            had
        });
        Self(file)
    }
}

fn open_lock() -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(LOCK_FILE)
        .inspect_err(|e| tracing::debug!("{LOCK_FILE}: {e}; attaching without it"))
        .ok()
}

/// The descriptors of this process that hold a probe: perf events and BPF links.
fn probe_fds() -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy();
            (target == "anon_inode:[perf_event]" || target == "anon_inode:bpf_link").then_some(fd)
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// The session's end of a hand-off: while it lives, the releaser waits; dropped once the
/// session has closed its own copies of the probes, so that the releaser's close of each is the
/// last one, the one that pays for the release.
pub struct Handoff {
    /// How many probes the releaser took.
    pub probes: usize,
    _go: std::os::fd::OwnedFd,
}

/// Forks a detached process that keeps this process's probes and closes every other
/// descriptor at once; when the returned [`Handoff`] is dropped (this process has closed its
/// copies, at no cost), it closes the probes one at a time. `None` when it could not start (the
/// caller then releases them itself).
pub fn hand_off() -> Option<Handoff> {
    let probes = probe_fds();
    let lock = open_lock();
    let lock_fd = lock.as_ref().map_or(-1, |f| f.as_raw_fd());
    let (wait, go) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let wait_fd = wait.as_raw_fd();
    // What the releaser keeps, sorted, made before the fork (the child may not allocate).
    let mut keep: Vec<RawFd> = probes
        .iter()
        .copied()
        .chain([lock_fd, wait_fd])
        .filter(|&fd| fd >= 0)
        .collect();
    keep.sort_unstable();
    // SAFETY: the child and grandchild call only async-signal-safe functions (sigaction,
    // setsid, fork, close_range, close, read, flock, nanosleep, _exit) on data prepared before
    // the fork.
    match unsafe { libc::fork() } {
        -1 => None,
        0 => unsafe {
            // Killable again: the session's handlers only note a signal.
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(signal, libc::SIG_DFL);
            }
            // Out of the terminal's process group (a Ctrl-C is the session's, not this), and
            // reparented to init, so that nobody waits for it.
            libc::setsid();
            if libc::fork() == 0 {
                release(&keep, &probes, lock_fd, wait_fd);
            }
            libc::_exit(0)
        },
        child => {
            let mut status = 0;
            // SAFETY: waiting for the child just forked, which exits at once.
            while unsafe { libc::waitpid(child, &mut status, 0) } == -1
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
            drop(wait);
            Some(Handoff {
                probes: probes.len(),
                _go: go,
            })
        }
    }
}

/// The grandchild: every descriptor but `keep` (the probes, the lock, the pipe) closed now (the
/// tracer's pipes, its record, the hold guard's end), then each probe under a shared lock.
unsafe fn release(keep: &[RawFd], probes: &[RawFd], lock: RawFd, wait: RawFd) -> ! {
    let mut from: u32 = 0;
    for &fd in keep {
        close_between(from, fd as u32);
        from = fd as u32 + 1;
    }
    close_between(from, u32::MAX);
    // Until the session has closed its copies (or is gone): end of file on the pipe.
    let mut byte = 0u8;
    while unsafe { libc::read(wait, (&raw mut byte).cast(), 1) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 2_000_000,
    };
    for &fd in probes {
        let locked = lock >= 0 && lock_within(lock, libc::LOCK_SH);
        unsafe {
            libc::close(fd);
            if locked {
                libc::flock(lock, libc::LOCK_UN);
            }
            // A session waiting to attach gets the lock before the next release takes it.
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
    unsafe { libc::_exit(0) }
}

/// Closes descriptors `from..to` (to exclusive): close_range (5.9+), else one by one up to
/// the descriptor limit a session can have opened.
fn close_between(from: u32, to: u32) {
    if from >= to {
        return;
    }
    // SAFETY: closing descriptors of this process, which owns nothing else that uses them.
    unsafe {
        if libc::syscall(libc::SYS_close_range, from, to - 1, 0) == 0 {
            return;
        }
        for fd in from..to.min(65_536) {
            libc::close(fd as RawFd);
        }
    }
}
