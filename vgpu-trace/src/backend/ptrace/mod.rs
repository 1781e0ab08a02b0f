//! The ptrace backend, for where the kernel refuses BPF (user namespaces, containers without
//! CAP_BPF, gVisor). Its engine (a process of its own, see `engine`) starts the command or
//! seizes running processes, follows them and everything they start, and turns what it sees
//! into the same raw events as the eBPF backend:
//! - processes: fork, exec with argv and environment, exit;
//! - library evidence, under `run`: opens of ".so" paths and executable mappings of them (system
//!   calls, stopped by a seccomp filter where one could be installed, else every call stops);
//!   under `attach`, which stops at no system call: ld.so's list of objects, read at its
//!   rendezvous (`rendezvous`);
//! - `dl*` and CUDA/NVML calls, by breakpoints (`probes`).
mod attach;
mod engine;
mod outbox;
mod probes;
pub mod rendezvous;
pub mod seccomp;
mod tracee;
mod wakeups;
mod x86;

use std::io::BufRead as _;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::sync::mpsc;

use anyhow::Context as _;
use nix::fcntl::OFlag;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use self::engine::serve;
use crate::event::RawEvent;
use crate::failure::Failure;

/// What the engine traces.
pub enum Job {
    /// Start this command.
    Run(Vec<String>),
    /// Seize these processes and their descendants.
    Attach(Vec<u32>),
}

/// The signal that asks the engine to let go of its tracees; also its parent-death signal, so
/// that a session killed outright lets go too.
pub const RELEASE_SIGNAL: i32 = libc::SIGUSR1;

/// What the engine tells the session.
#[derive(Serialize, Deserialize)]
pub enum Message {
    /// The command is running, traced.
    Started {
        pid: u32,
    },
    /// These processes are seized (`attach`), as of `ts_ns`.
    Attached {
        pids: Vec<u32>,
        ts_ns: u64,
    },
    /// It could not be (`usage`: the command itself is at fault, e.g. not found).
    Failed {
        message: String,
        usage: bool,
    },
    Event(RawEvent),
    /// Something the user should know (functions that could not be probed).
    Warn(String),
    /// The command's own end (its wait status), after its last event.
    CommandExit {
        wait_status: i32,
    },
    /// Asked to let go: every patched byte is back, and `threads` threads were detached (or,
    /// under the seccomp filter, run on with only their filtered calls answered).
    Released {
        threads: u32,
        detached: bool,
    },
}

/// The events the engine sends, for the event loop.
pub struct PtraceSource {
    rx: mpsc::Receiver<RawEvent>,
    /// Readable when events wait (a byte per batch).
    wake: OwnedFd,
    /// The pipe's other end, kept so that it never reads as closed (which would be ready for
    /// ever) once the engine is done.
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

/// How the engine began: the command it started, or the processes it seized.
pub enum Began {
    Command(Pid),
    Attached { pids: Vec<u32>, ts_ns: u64 },
}

/// The engine at work: its events, the end of `run`'s command, and the way to let go.
pub struct Launched {
    pub began: Began,
    pub source: PtraceSource,
    /// `run`'s command's end.
    pub exit: Option<tokio::sync::oneshot::Receiver<nix::Result<WaitStatus>>>,
    pub engine: EngineHandle,
}

/// The engine process, to be asked to let go.
pub struct EngineHandle {
    pid: Pid,
    released: mpsc::Receiver<(u32, bool)>,
}

/// How the engine answered the session's request to let go.
pub enum Release {
    /// `threads` let go: detached, or (the seccomp filter in) served alone from now on.
    Done { threads: u32, detached: bool },
    /// It had ended already: nothing was left to let go.
    Ended,
    /// No answer in time (a thread that does not stop): it lets go of the rest later.
    NoAnswer,
}

impl EngineHandle {
    /// Asks the engine to let go and waits up to `timeout` for it.
    pub fn release(self, timeout: std::time::Duration) -> Release {
        if let Ok(signal) = nix::sys::signal::Signal::try_from(RELEASE_SIGNAL) {
            let _ = nix::sys::signal::kill(self.pid, signal);
        }
        match self.released.recv_timeout(timeout) {
            Ok((threads, detached)) => Release::Done { threads, detached },
            Err(mpsc::RecvTimeoutError::Disconnected) => Release::Ended,
            Err(mpsc::RecvTimeoutError::Timeout) => Release::NoAnswer,
        }
    }
}

/// Starts the engine on `job`. Fails as bad input when the command cannot be run or there
/// is nothing to attach to.
pub fn start(job: &Job) -> anyhow::Result<Launched> {
    let (messages_rx, messages_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating the ptrace engine's pipe")?;
    let messages_tx_fd = messages_tx.as_raw_fd();
    let mut engine = std::process::Command::new("/proc/self/exe");
    engine.arg0("vgpu-trace").arg("ptrace-engine");
    match job {
        Job::Run(cmd) => engine.arg("--").args(cmd),
        Job::Attach(pids) => engine
            .args(["--attach", "--"])
            .args(pids.iter().map(u32::to_string)),
    };
    let session = nix::unistd::getpid();
    // SAFETY: dup2, prctl and getppid are async-signal-safe; they run in the forked child
    // before exec.
    unsafe {
        engine.pre_exec(move || {
            if libc::dup2(messages_tx_fd, engine::MESSAGES_FD) < 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, RELEASE_SIGNAL) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != session.as_raw() {
                return Err(std::io::Error::other("the session is gone"));
            }
            Ok(())
        });
    }
    // It may outlive the session (see `engine`); while the session lives, the reader reaps it.
    let mut child = engine.spawn().context("starting the ptrace engine")?;
    let engine_pid = Pid::from_raw(child.id() as i32);
    drop(messages_tx);
    let mut lines = std::io::BufReader::new(std::fs::File::from(messages_rx)).lines();
    let began = match lines.next().map(|l| l.map(|l| serde_json::from_str(&l))) {
        Some(Ok(Ok(Message::Started { pid }))) => Began::Command(Pid::from_raw(pid as i32)),
        Some(Ok(Ok(Message::Attached { pids, ts_ns }))) => Began::Attached { pids, ts_ns },
        Some(Ok(Ok(Message::Failed { message, usage }))) => {
            let _ = child.wait();
            let err = anyhow::anyhow!(message);
            return Err(if usage {
                Failure::Usage.mark(err)
            } else {
                Failure::CannotTrace.mark(err)
            });
        }
        _ => {
            let _ = child.wait();
            return Err(Failure::CannotTrace
                .mark(anyhow::anyhow!("the ptrace engine ended before it began")));
        }
    };
    let (wake_rx, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("creating the ptrace backend's pipe")?;
    let writer = wake_tx
        .try_clone()
        .context("creating the ptrace backend's pipe")?;
    let (tx, rx) = mpsc::channel();
    let (released_tx, released) = mpsc::channel();
    let command = match &began {
        Began::Command(pid) => Some(*pid),
        Began::Attached { .. } => None,
    };
    let (exit_tx, exit) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vgpu-ptrace".into())
        .spawn(move || {
            let mut exit_tx = command.map(|pid| (pid, exit_tx));
            for line in lines {
                let Ok(line) = line else { break };
                match serde_json::from_str(&line) {
                    Ok(Message::Event(ev)) => {
                        if tx.send(ev).is_err() {
                            break;
                        }
                        let _ = nix::unistd::write(&wake_tx, &[1]);
                    }
                    Ok(Message::Warn(text)) => tracing::warn!("ptrace: {text}"),
                    Ok(Message::CommandExit { wait_status }) => {
                        if let Some((pid, tx)) = exit_tx.take() {
                            let _ = tx.send(Ok(wait_status_of(pid, wait_status)));
                        }
                    }
                    Ok(Message::Released { threads, detached }) => {
                        let _ = released_tx.send((threads, detached));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("ptrace: unreadable message from the engine: {e}"),
                }
            }
            if let Some((_, tx)) = exit_tx.take() {
                tracing::warn!("ptrace: the engine ended before the command");
                let _ = tx.send(Err(nix::errno::Errno::ECHILD));
            }
            let _ = child.wait();
        })
        .context("starting the ptrace reader")?;
    Ok(Launched {
        began,
        source: PtraceSource {
            rx,
            wake: wake_rx,
            _writer: writer,
        },
        exit: command.map(|_| exit),
        engine: EngineHandle {
            pid: engine_pid,
            released,
        },
    })
}

fn wait_status_of(pid: Pid, status: i32) -> WaitStatus {
    WaitStatus::from_raw(pid, status).unwrap_or(WaitStatus::Exited(pid, 1))
}
