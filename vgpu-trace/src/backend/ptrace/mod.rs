//! The ptrace backend, for where the kernel refuses BPF (user namespaces, containers without
//! CAP_BPF, gVisor). Its engine (a process of its own, see `engine`) starts the command,
//! follows it and everything it starts, and turns what it sees into the same raw events as
//! the eBPF backend:
//! - processes: fork, exec with argv and environment, exit;
//! - library evidence: opens of ".so" paths and executable mappings of them (system calls,
//!   stopped by a seccomp filter where it could be installed, else every call stops);
//! - `dl*` and CUDA/NVML calls, by breakpoints (`probes`).
//!
//! Not yet: attach.
mod engine;
mod outbox;
mod probes;
pub mod seccomp;
mod tracee;
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

/// What the engine tells the session.
#[derive(Serialize, Deserialize)]
pub enum Message {
    /// The command is running, traced.
    Started {
        pid: u32,
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

/// The command started under ptrace, and where its end is told.
pub struct Launched {
    pub pid: Pid,
    pub source: PtraceSource,
    pub exit: tokio::sync::oneshot::Receiver<nix::Result<WaitStatus>>,
}

/// Starts the engine, which starts `cmd` traced from its exec on. Fails as bad input when the
/// command cannot be run.
pub fn launch(cmd: &[String]) -> anyhow::Result<Launched> {
    let (messages_rx, messages_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating the ptrace engine's pipe")?;
    let messages_tx_fd = messages_tx.as_raw_fd();
    let mut engine = std::process::Command::new("/proc/self/exe");
    engine
        .arg0("vgpu-trace")
        .arg("ptrace-engine")
        .arg("--")
        .args(cmd);
    // SAFETY: dup2 is async-signal-safe; it runs in the forked child before exec.
    unsafe {
        engine.pre_exec(move || {
            if libc::dup2(messages_tx_fd, engine::MESSAGES_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // It may outlive the session (see `engine`); while the session lives, the reader reaps it.
    let mut child = engine.spawn().context("starting the ptrace engine")?;
    drop(messages_tx);
    let mut lines = std::io::BufReader::new(std::fs::File::from(messages_rx)).lines();
    let pid = match lines.next().map(|l| l.map(|l| serde_json::from_str(&l))) {
        Some(Ok(Ok(Message::Started { pid }))) => Pid::from_raw(pid as i32),
        Some(Ok(Ok(Message::Failed { message, usage }))) => {
            let err = anyhow::anyhow!(message);
            return Err(if usage {
                Failure::Usage.mark(err)
            } else {
                Failure::CannotTrace.mark(err)
            });
        }
        _ => {
            let _ = child.wait();
            return Err(Failure::CannotTrace.mark(anyhow::anyhow!(
                "the ptrace engine ended before starting the command"
            )));
        }
    };
    let (wake_rx, wake_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("creating the ptrace backend's pipe")?;
    let writer = wake_tx
        .try_clone()
        .context("creating the ptrace backend's pipe")?;
    let (tx, rx) = mpsc::channel();
    let (exit_tx, exit) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vgpu-ptrace".into())
        .spawn(move || {
            let mut exit_tx = Some(exit_tx);
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
                        if let Some(tx) = exit_tx.take() {
                            let _ = tx.send(Ok(wait_status_of(pid, wait_status)));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("ptrace: unreadable message from the engine: {e}"),
                }
            }
            if let Some(tx) = exit_tx.take() {
                tracing::warn!("ptrace: the engine ended before the command");
                let _ = tx.send(Err(nix::errno::Errno::ECHILD));
            }
            let _ = child.wait();
        })
        .context("starting the ptrace reader")?;
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

fn wait_status_of(pid: Pid, status: i32) -> WaitStatus {
    WaitStatus::from_raw(pid, status).unwrap_or(WaitStatus::Exited(pid, 1))
}
