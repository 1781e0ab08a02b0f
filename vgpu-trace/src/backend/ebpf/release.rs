//! Releasing perf-event uprobes (kernels before 6.6) off everyone's path. Each one's release
//! waits for grace periods of its own, serially, under the kernel's `event_mutex`: a dozen take
//! a second or more. So the session hands them to a detached process that closes them one at a
//! time and exits, and the session ends at once. A session that attaches perf-event uprobes
//! meanwhile would queue behind each release for that mutex: it takes the lock file
//! exclusively while it attaches, and the releaser closes a probe only under a shared lock, so
//! an attach waits for one release at most.
use std::{
    fs::File,
    os::fd::{AsRawFd as _, RawFd},
};

/// Held exclusively while a session attaches perf-event uprobes, shared around each release.
pub const LOCK_FILE: &str = "/run/vgpu-trace.lock";

/// The lock file, held exclusively until dropped; nothing when it cannot be had (the attach
/// then only risks waiting on a release).
pub struct AttachLock(#[allow(dead_code, reason = "held for its lock")] Option<File>);

impl AttachLock {
    pub fn take() -> Self {
        let file = open_lock();
        if let Some(f) = &file {
            // SAFETY: flock on a descriptor this File owns; closing it drops the lock.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        }
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

/// Forks a detached process that keeps this process's probes, closes every other descriptor
/// at once, then the probes one at a time; this process can then drop its own copies at no
/// cost. Returns how many probes it took, or `None` when it could not start (the caller then
/// releases them itself).
pub fn hand_off() -> Option<usize> {
    let probes = probe_fds();
    let lock = open_lock();
    let lock_fd = lock.as_ref().map_or(-1, |f| f.as_raw_fd());
    // SAFETY: the child and grandchild call only async-signal-safe functions (setsid, fork,
    // close_range, close, flock, nanosleep, _exit) on data prepared before the fork.
    match unsafe { libc::fork() } {
        -1 => None,
        0 => unsafe {
            // Out of the terminal's process group (a Ctrl-C is the session's, not this), and
            // reparented to init, so that nobody waits for it.
            libc::setsid();
            if libc::fork() == 0 {
                release(&probes, lock_fd);
            }
            libc::_exit(0)
        },
        child => {
            let mut status = 0;
            // SAFETY: waiting for the child just forked, which exits at once.
            unsafe { libc::waitpid(child, &mut status, 0) };
            Some(probes.len())
        }
    }
}

/// The grandchild: everything but the probes and the lock closed now (the tracer's pipes,
/// its record, the hold guard's end), then each probe under a shared lock.
unsafe fn release(probes: &[RawFd], lock: RawFd) -> ! {
    let mut keep: [RawFd; 512] = [-1; 512];
    let mut kept = 0;
    for &fd in probes.iter().chain([lock].iter()) {
        if fd >= 0 && kept < keep.len() {
            keep[kept] = fd;
            kept += 1;
        }
    }
    let keep = &mut keep[..kept];
    keep.sort_unstable();
    let mut from: u32 = 0;
    for &fd in keep.iter() {
        close_between(from, fd as u32);
        from = fd as u32 + 1;
    }
    close_between(from, u32::MAX);
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 2_000_000,
    };
    for &fd in probes {
        unsafe {
            if lock >= 0 {
                libc::flock(lock, libc::LOCK_SH);
            }
            libc::close(fd);
            if lock >= 0 {
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
