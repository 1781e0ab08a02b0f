//! The hold guard: a process of its own, forked at load, that makes sure no traced process
//! stays stopped for arming, whatever becomes of the tracer (SIGKILL, OOM kill, SIGSTOP,
//! a crash). It shares two maps with the kernel side: `HOLD_GATE`, which allows holds, and
//! `HOLDS`, where every hold is written down before the process is stopped.
//!
//! - While the tracer lives, it continues holds older than [`HOLD_LIMIT_NS`] (a stopped or
//!   starved tracer must not stop its tracees with it).
//! - When the tracer is gone (its end of a pipe closes without a word), it closes the gate,
//!   continues every hold, and keeps looking for [`AFTERMATH_NS`]: a program that was running
//!   as the tracer died may still be making one.
//! - When the tracer finishes normally, it has detached the programs and says so: the guard
//!   continues what is left and exits.
//!
//! The child of a fork in a threaded process may only make async-signal-safe calls: it uses
//! raw system calls on stack buffers, and never allocates.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};

use anyhow::Context as _;
use nix::{fcntl::OFlag, unistd::pipe2};

/// A hold older than this is continued by the guard, armed or not.
pub const HOLD_LIMIT_NS: u64 = 1_000_000_000;
/// How long the guard looks for late holds once the tracer is gone.
const AFTERMATH_NS: u64 = 2_000_000_000;
const AFTERMATH_POLL_MS: i32 = 20;
const WATCH_POLL_MS: i32 = 250;
/// The word the tracer writes when its programs are detached.
const DONE: u8 = b'D';

pub struct Guard {
    pid: libc::pid_t,
    /// Readable when the guard has exited.
    pidfd: OwnedFd,
    /// The tracer's end of the pipe; closed without [`DONE`], the guard takes over.
    tell: Option<OwnedFd>,
}

impl Guard {
    /// Forks the guard, sharing `holds` and `gate` (fds of the two maps) with it.
    pub fn spawn(holds: BorrowedFd, gate: BorrowedFd) -> anyhow::Result<Self> {
        let (listen, tell) = pipe2(OFlag::O_CLOEXEC).context("creating the guard's pipe")?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let fds = Fds {
            listen: listen.as_raw_fd(),
            holds: holds.as_raw_fd(),
            gate: gate.as_raw_fd(),
        };
        // SAFETY: the child runs `child::run`, which only makes async-signal-safe calls and
        // never returns.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).context("forking the hold guard"),
            0 => child::run(fds, 1_000_000_000 / ticks),
            pid => {
                drop(listen);
                // SAFETY: pidfd_open on our own child, which cannot be reaped before we wait.
                let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
                if raw < 0 {
                    return Err(std::io::Error::last_os_error()).context("pidfd_open(guard)");
                }
                Ok(Self {
                    pid,
                    // SAFETY: a new fd, ours alone.
                    pidfd: unsafe { OwnedFd::from_raw_fd(raw) },
                    tell: Some(tell),
                })
            }
        }
    }

    /// Readable once the guard has exited (while the tracer still needs it, a reason to stop
    /// holding processes).
    pub fn exited(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The programs are detached: the guard continues what is still held, and exits.
    pub fn finish(mut self) {
        if let Some(tell) = self.tell.take() {
            let _ = nix::unistd::write(&tell, &[DONE]);
        }
        self.reap();
    }

    fn reap(&self) {
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

impl Drop for Guard {
    /// Left without [`Guard::finish`] (an error unwinding the session): the guard takes over
    /// as if the tracer had died, and is reaped in the background.
    fn drop(&mut self) {
        if self.tell.take().is_some() {
            let pid = self.pid;
            // SAFETY: waiting for our own child.
            let _ = std::thread::Builder::new()
                .name("vgpu-guard-reap".into())
                .spawn(move || unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) });
        }
    }
}

#[derive(Clone, Copy)]
struct Fds {
    listen: RawFd,
    holds: RawFd,
    gate: RawFd,
}

mod child {
    use super::*;

    /// What the guard knows of the tracer.
    #[derive(PartialEq)]
    enum Tracer {
        Running,
        /// Gone since this boot time.
        Gone(u64),
    }

    pub(super) fn run(fds: Fds, ns_per_tick: u64) -> ! {
        detach(fds);
        let mut tracer = Tracer::Running;
        loop {
            let wait = match tracer {
                Tracer::Running => WATCH_POLL_MS,
                Tracer::Gone(_) => AFTERMATH_POLL_MS,
            };
            if tracer == Tracer::Running && readable(fds.listen, wait) {
                let mut word = [0u8; 1];
                // SAFETY: reading into a stack buffer.
                let n = unsafe { libc::read(fds.listen, word.as_mut_ptr().cast(), 1) };
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                close_gate(fds.gate);
                if n == 1 && word[0] == DONE {
                    release(fds.holds, ns_per_tick, |_| true);
                    exit(0);
                }
                tracer = Tracer::Gone(boottime_ns());
            } else if tracer != Tracer::Running {
                // SAFETY: a plain sleep.
                unsafe { libc::usleep(wait as u32 * 1000) };
            }
            let now = boottime_ns();
            match tracer {
                Tracer::Running => release(fds.holds, ns_per_tick, |held_at| {
                    now.saturating_sub(held_at) > HOLD_LIMIT_NS
                }),
                Tracer::Gone(since) => {
                    release(fds.holds, ns_per_tick, |_| true);
                    if now.saturating_sub(since) > AFTERMATH_NS {
                        exit(0);
                    }
                }
            }
        }
    }

    /// Leaves the tracer's session, signals and files: only SIGKILL ends the guard (a Ctrl-C or
    /// `timeout` signals the whole process group), and it holds no link, so the programs die
    /// with the tracer.
    fn detach(fds: Fds) {
        // SAFETY: async-signal-safe calls on constants and our own fds.
        unsafe {
            libc::setsid();
            for sig in crate::backend::SESSION_SIGNALS {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_NAME, c"vgpu-guard".as_ptr());
            let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
            if adj >= 0 {
                libc::write(adj, b"-1000".as_ptr().cast(), 5);
                libc::close(adj);
            }
            // stdio on /dev/null: a reader waiting for the tracer's output to end must not
            // wait for the guard.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                for std in 0..3 {
                    libc::dup2(null, std);
                }
            }
            let mut keep = [fds.listen, fds.holds, fds.gate];
            keep.sort_unstable();
            let mut first = 3u32;
            for fd in keep {
                if fd as u32 > first {
                    libc::syscall(libc::SYS_close_range, first, fd as u32 - 1, 0);
                }
                first = fd as u32 + 1;
            }
            libc::syscall(libc::SYS_close_range, first, u32::MAX, 0);
        }
    }

    fn readable(fd: RawFd, timeout_ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
    }

    /// Continues every hold `due` picks (by hold time) and forgets it.
    fn release(holds: RawFd, ns_per_tick: u64, due: impl Fn(u64) -> bool) {
        let mut keys = [0u64; 1024];
        let mut count = 0;
        let mut prev: Option<u64> = None;
        while count < keys.len() {
            let mut next = 0u64;
            if bpf::next_key(holds, prev.as_ref(), &mut next).is_err() {
                break;
            }
            keys[count] = next;
            count += 1;
            prev = Some(next);
        }
        for &held_at in &keys[..count] {
            if !due(held_at) {
                continue;
            }
            let mut tgid = 0u32;
            if bpf::lookup(holds, &held_at, &mut tgid).is_ok()
                && started_ns(tgid, ns_per_tick).is_some_and(|start| start <= held_at)
            {
                // SAFETY: a signal to a process the kernel stopped (not one that reused its
                // pid: that one started after the hold).
                unsafe { libc::kill(tgid as libc::pid_t, libc::SIGCONT) };
            }
            let _ = bpf::delete(holds, &held_at);
        }
    }

    fn close_gate(gate: RawFd) {
        let _ = bpf::update(gate, &0u32, &0u32);
    }

    /// When `tgid` started (boot time, ns), from /proc/TGID/stat; `None` once it is gone.
    fn started_ns(tgid: u32, ns_per_tick: u64) -> Option<u64> {
        let mut path = [0u8; 32];
        let mut len = 0;
        for &b in b"/proc/" {
            path[len] = b;
            len += 1;
        }
        len += write_decimal(&mut path[len..], u64::from(tgid));
        for &b in b"/stat\0" {
            path[len] = b;
            len += 1;
        }
        let mut buf = [0u8; 1024];
        // SAFETY: a NUL-terminated path and a stack buffer.
        let n = unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return None;
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n
        };
        let stat = &buf[..usize::try_from(n).ok()?];
        crate::procfs::stat_start_ticks(stat).map(|ticks| ticks * ns_per_tick)
    }

    fn write_decimal(out: &mut [u8], mut v: u64) -> usize {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in 0..n {
            out[i] = digits[n - 1 - i];
        }
        n
    }

    fn boottime_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a timespec on the stack.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn errno() -> i32 {
        // SAFETY: reading this thread's errno.
        unsafe { *libc::__errno_location() }
    }

    fn exit(code: i32) -> ! {
        // SAFETY: _exit skips atexit handlers and stdio, which belong to the tracer.
        unsafe { libc::_exit(code) }
    }

    /// Map element calls through the raw bpf(2) system call.
    mod bpf {
        use std::os::fd::RawFd;

        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            /// The value, or for `BPF_MAP_GET_NEXT_KEY` the next key.
            value: u64,
            flags: u64,
        }

        fn call<K, V>(cmd: u32, map: RawFd, key: Option<&K>, value: *mut V) -> Result<(), ()> {
            let mut attr = ElemAttr {
                map_fd: map as u32,
                _pad: 0,
                key: key.map_or(0, |k| k as *const K as u64),
                value: value as u64,
                flags: 0,
            };
            // SAFETY: the attribute names a live key and value of the map's sizes.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    cmd,
                    &mut attr as *mut ElemAttr,
                    size_of::<ElemAttr>(),
                )
            };
            if rc == 0 { Ok(()) } else { Err(()) }
        }

        pub fn lookup(map: RawFd, key: &u64, value: &mut u32) -> Result<(), ()> {
            call(1, map, Some(key), value as *mut u32)
        }

        pub fn update(map: RawFd, key: &u32, value: &u32) -> Result<(), ()> {
            call(2, map, Some(key), value as *const u32 as *mut u32)
        }

        pub fn delete(map: RawFd, key: &u64) -> Result<(), ()> {
            call::<u64, u8>(3, map, Some(key), std::ptr::null_mut())
        }

        pub fn next_key(map: RawFd, key: Option<&u64>, next: &mut u64) -> Result<(), ()> {
            call(4, map, key, next as *mut u64)
        }
    }
}
