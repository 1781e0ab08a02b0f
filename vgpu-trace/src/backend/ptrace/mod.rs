//! The ptrace backend, for where the kernel refuses BPF (user namespaces, containers without
//! CAP_BPF, gVisor). A thread of its own starts the command, follows it and everything it
//! starts, and turns what it sees into the same raw events as the eBPF backend: processes
//! (fork, exec with argv and environment, exit) and library evidence (openat of ".so" paths,
//! executable mappings of them, their closing).
//!
//! Not yet: the `dl*` calls and the CUDA/NVML API calls (breakpoints), attach, and a
//! seccomp filter so that only the system calls of interest stop the tracee.
mod tracee;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::sync::mpsc;

use anyhow::Context as _;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use vgpu_trace_common::{EXEC_ARGV_BYTES, EXEC_ENV_BYTES, STR_MAX};

use self::tracee::SyscallStop;
use crate::event::{RawBody, RawEvent};
use crate::procfs;
use crate::text::Text;

const SYS_OPEN: u64 = 2;
const SYS_CLOSE: u64 = 3;
const SYS_MMAP: u64 = 9;
const SYS_OPENAT: u64 = 257;
const PROT_EXEC: u64 = 4;

/// The events the ptrace thread produces, for the event loop.
pub struct PtraceSource {
    rx: mpsc::Receiver<RawEvent>,
    /// Readable when events wait (a byte per batch).
    wake: OwnedFd,
    /// The pipe's other end, kept so that it never reads as closed (which would be ready for
    /// ever) once the ptrace thread is done.
    _writer: OwnedFd,
}

impl super::Source for PtraceSource {
    fn drain(&mut self, out: &mut Vec<RawEvent>, max: usize) -> usize {
        let mut scratch = [0u8; 256];
        while matches!(nix::unistd::read(&self.wake, &mut scratch), Ok(n) if n > 0) {}
        let mut taken = 0;
        while taken < max {
            match self.rx.try_recv() {
                Ok(ev) => {
                    out.push(ev);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        taken
    }

    fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Nothing is dropped: a tracee waits in its stop while its event is made.
    fn lost(&self) -> u64 {
        0
    }
}

/// The command started under ptrace, and where its end is told.
pub struct Launched {
    pub pid: Pid,
    pub source: PtraceSource,
    pub exit: tokio::sync::oneshot::Receiver<nix::Result<WaitStatus>>,
}

/// Starts `cmd` traced from its exec on. Fails as bad input when it cannot be run.
pub fn launch(cmd: &[String]) -> anyhow::Result<Launched> {
    let (wake_rx, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("creating the ptrace backend's pipe")?;
    let writer = wake_tx
        .try_clone()
        .context("creating the ptrace backend's pipe")?;
    let (tx, rx) = mpsc::channel();
    let (exit_tx, exit) = tokio::sync::oneshot::channel();
    let (started_tx, started_rx) = mpsc::channel();
    let cmd = cmd.to_vec();
    std::thread::Builder::new()
        .name("vgpu-ptrace".into())
        .spawn(move || {
            // ptrace requests must come from the thread that attached: this one, for good.
            let started = start(&cmd);
            let pid = started.as_ref().ok().copied();
            let _ = started_tx.send(started);
            if let Some(pid) = pid {
                Engine::new(tx, wake_tx, pid, exit_tx).run();
            }
        })
        .context("starting the ptrace thread")?;
    let pid = started_rx
        .recv()
        .context("the ptrace thread ended before starting the command")??;
    Ok(Launched {
        pid,
        source: PtraceSource {
            rx,
            wake: wake_rx,
            _writer: writer,
        },
        exit,
    })
}

/// Forks the command, seizes it while it waits, then lets it exec.
fn start(cmd: &[String]) -> anyhow::Result<Pid> {
    let child = crate::session::launch::prepare(cmd)?;
    let pid = child.pid;
    let options = Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC;
    ptrace::seize(pid, options).context("PTRACE_SEIZE of the command")?;
    child.release()?;
    Ok(pid)
}

/// What a thread is in the middle of, between a syscall's entry and exit stops.
enum Pending {
    Open { path: Text, flags: u32 },
    Mmap { fd: u32, len: u64, prot: u32 },
    Close { fd: u32 },
}

struct Task {
    tgid: u32,
    pending: Option<Pending>,
}

struct Engine {
    tx: mpsc::Sender<RawEvent>,
    wake: OwnedFd,
    tasks: HashMap<Pid, Task>,
    /// Library fds by (tgid, fd), from `LibOpen`.
    lib_fds: HashSet<(u32, u32)>,
    command: Pid,
    exit_tx: Option<tokio::sync::oneshot::Sender<nix::Result<WaitStatus>>>,
}

impl Engine {
    fn new(
        tx: mpsc::Sender<RawEvent>,
        wake: OwnedFd,
        command: Pid,
        exit_tx: tokio::sync::oneshot::Sender<nix::Result<WaitStatus>>,
    ) -> Self {
        let mut tasks = HashMap::new();
        tasks.insert(
            command,
            Task {
                tgid: command.as_raw() as u32,
                pending: None,
            },
        );
        Self {
            tx,
            wake,
            tasks,
            lib_fds: HashSet::new(),
            command,
            exit_tx: Some(exit_tx),
        }
    }

    /// Serves stops until no traced task is left.
    fn run(mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::__WALL)) {
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break,
                Err(e) => {
                    tracing::warn!("ptrace: waitpid failed: {e}");
                    break;
                }
            };
            match status {
                WaitStatus::PtraceSyscall(pid) => {
                    self.syscall(pid);
                    resume(pid, None);
                }
                WaitStatus::PtraceEvent(pid, sig, event) => self.event(pid, sig, event),
                WaitStatus::Stopped(pid, sig) => {
                    // A signal on its way to the tracee: deliver it.
                    self.adopt(pid);
                    resume(pid, Some(sig));
                }
                WaitStatus::Exited(pid, code) => self.gone(pid, code << 8, status),
                WaitStatus::Signaled(pid, sig, core) => {
                    self.gone(pid, sig as i32 | if core { 0x80 } else { 0 }, status)
                }
                _ => {}
            }
        }
    }

    fn send(&self, tgid: u32, tid: Pid, body: RawBody) {
        let ev = RawEvent {
            ts_ns: procfs::boottime_ns(),
            tgid,
            tid: tid.as_raw() as u32,
            body,
        };
        if self.tx.send(ev).is_ok() {
            let _ = nix::unistd::write(&self.wake, &[1]);
        }
    }

    /// A task seen for the first time (a new thread or child may stop before its parent's
    /// fork event is reported).
    fn adopt(&mut self, pid: Pid) -> u32 {
        if let Some(t) = self.tasks.get(&pid) {
            return t.tgid;
        }
        let tgid = tracee::tgid_of(pid).unwrap_or(pid.as_raw() as u32);
        self.tasks.insert(
            pid,
            Task {
                tgid,
                pending: None,
            },
        );
        tgid
    }

    fn event(&mut self, pid: Pid, sig: Signal, event: i32) {
        let tgid = self.adopt(pid);
        match event {
            e if e == Event::PTRACE_EVENT_FORK as i32
                || e == Event::PTRACE_EVENT_VFORK as i32
                || e == Event::PTRACE_EVENT_CLONE as i32 =>
            {
                if let Ok(new) = ptrace::getevent(pid) {
                    let new = Pid::from_raw(new as i32);
                    let new_tgid = self.adopt(new);
                    if new_tgid != tgid {
                        self.send(
                            tgid,
                            pid,
                            RawBody::Fork {
                                child_tgid: new_tgid,
                            },
                        );
                    }
                }
                resume(pid, None);
            }
            e if e == Event::PTRACE_EVENT_EXEC as i32 => {
                self.exec(pid);
                resume(pid, None);
            }
            e if e == Event::PTRACE_EVENT_STOP as i32 => {
                // A new task's first stop, or an interrupt, says SIGTRAP; a group stop says
                // the stop signal.
                if matches!(
                    sig,
                    Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
                ) {
                    // A group stop: stay stopped until SIGCONT, as without a tracer.
                    let _ = listen(pid);
                } else {
                    resume(pid, None);
                }
            }
            _ => resume(pid, None),
        }
    }

    /// A successful exec: the process's new argv and environment, then the exec itself.
    fn exec(&mut self, pid: Pid) {
        let tgid = pid.as_raw() as u32;
        let old_tid = ptrace::getevent(pid).map_or(tgid, |t| t as u32);
        if old_tid != tgid {
            self.tasks.remove(&Pid::from_raw(old_tid as i32));
        }
        self.lib_fds.retain(|(t, _)| *t != tgid);
        for (env, file, max) in [
            (false, "cmdline", EXEC_ARGV_BYTES),
            (true, "environ", EXEC_ENV_BYTES),
        ] {
            let (bytes, total) = tracee::proc_area(tgid, file, max);
            self.send(
                tgid,
                pid,
                RawBody::ExecArea {
                    env,
                    offset: 0,
                    total: total as u32,
                    bytes,
                },
            );
        }
        let comm = procfs::stat(tgid).map(|s| s.comm).unwrap_or_default();
        let filename = procfs::exe(tgid)
            .map(|p| Text::from_bytes(p.as_os_str().as_encoded_bytes()))
            .unwrap_or_default();
        self.send(
            tgid,
            pid,
            RawBody::Exec {
                old_tid,
                comm,
                filename,
            },
        );
    }

    /// A syscall stop: note the call at entry, report it at exit.
    fn syscall(&mut self, pid: Pid) {
        let tgid = self.adopt(pid);
        match tracee::syscall_stop(pid) {
            SyscallStop::Entry { nr, args } => {
                let pending = match nr {
                    SYS_OPENAT | SYS_OPEN => {
                        let (path_at, flags) = if nr == SYS_OPENAT {
                            (args[1], args[2])
                        } else {
                            (args[0], args[1])
                        };
                        let path = tracee::read_string(pid, path_at, STR_MAX);
                        let so = path.as_bytes().windows(3).any(|w| w == b".so");
                        so.then_some(Pending::Open {
                            path,
                            flags: flags as u32,
                        })
                    }
                    SYS_MMAP if args[2] & PROT_EXEC != 0 => {
                        let fd = args[4] as u32;
                        self.lib_fds.contains(&(tgid, fd)).then_some(Pending::Mmap {
                            fd,
                            len: args[1],
                            prot: args[2] as u32,
                        })
                    }
                    SYS_CLOSE => {
                        let fd = args[0] as u32;
                        self.lib_fds
                            .contains(&(tgid, fd))
                            .then_some(Pending::Close { fd })
                    }
                    _ => None,
                };
                if let Some(task) = self.tasks.get_mut(&pid) {
                    task.pending = pending;
                }
            }
            SyscallStop::Exit { ret } => {
                let Some(pending) = self.tasks.get_mut(&pid).and_then(|t| t.pending.take()) else {
                    return;
                };
                let body = match pending {
                    Pending::Open { path, flags } => {
                        if ret >= 0 {
                            self.lib_fds.insert((tgid, ret as u32));
                        }
                        RawBody::LibOpen { ret, flags, path }
                    }
                    Pending::Mmap { fd, len, prot } => RawBody::LibMmap {
                        fd,
                        addr: ret,
                        len,
                        prot,
                        stopped: false,
                    },
                    Pending::Close { fd } => {
                        self.lib_fds.remove(&(tgid, fd));
                        RawBody::LibClose { fd }
                    }
                };
                self.send(tgid, pid, body);
            }
            SyscallStop::Other => {}
        }
    }

    /// A task was reaped: its exit, and the command's end for the event loop.
    fn gone(&mut self, pid: Pid, wait_status: i32, status: WaitStatus) {
        let tgid = self
            .tasks
            .remove(&pid)
            .map_or(pid.as_raw() as u32, |t| t.tgid);
        let group_dead = !self.tasks.values().any(|t| t.tgid == tgid);
        if group_dead {
            self.lib_fds.retain(|(t, _)| *t != tgid);
        }
        self.send(
            tgid,
            pid,
            RawBody::Exit {
                status: Some(wait_status),
                group_dead,
            },
        );
        if pid == self.command
            && let Some(tx) = self.exit_tx.take()
        {
            let _ = tx.send(Ok(status));
        }
    }
}

/// Lets a stopped tracee go on to its next system call (or event), delivering `sig`.
fn resume(pid: Pid, sig: Option<Signal>) {
    if let Err(e) = ptrace::syscall(pid, sig)
        && e != Errno::ESRCH
    {
        tracing::debug!("ptrace: resuming {pid}: {e}");
    }
}

fn listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no pointers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid.as_raw(), 0, 0) };
    Errno::result(rc).map(drop)
}
