//! Arming while the trace runs. When a followed process maps a CUDA/NVML library nobody has
//! armed, the kernel stops it and sends an `ArmRequest` on a ring of its own. A thread of its
//! own reads them: it puts the API uprobes on the file (through /proc/PID/fd/N, still open),
//! marks the path armed in the kernel and continues the process. It owns the programs, since
//! attaching needs them; the event loop never waits for it, nor it for the event loop.
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::{Context as _, anyhow};
use aya::maps::{MapData, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vgpu_trace_common::{ArmRequest, names};

use super::EbpfBackend;

/// How long processes were held while their libraries were armed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Holds {
    /// Holds the tracer ended, and the longest of them.
    pub count: u64,
    pub longest_ns: u64,
    /// Holds the guard ended at the limit, before arming was done.
    pub expired: u64,
}

/// The arming thread; [`Arming::finish`] stops it and gives the programs back.
pub struct Arming {
    stop: OwnedFd,
    thread: JoinHandle<(EbpfBackend, Holds)>,
}

impl EbpfBackend {
    /// Starts arming in the background, with the probes set up so far.
    pub fn arm_in_background(mut self) -> anyhow::Result<Arming> {
        self.start_lock = None;
        let ring = RingBuf::try_from(
            self.ebpf
                .take_map(names::ARM_REQUESTS)
                .ok_or_else(|| anyhow!("map {} missing", names::ARM_REQUESTS))?,
        )?;
        let (stop_rx, stop) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("vgpu-arming".into())
            .spawn(move || {
                let holds = self.serve(ring, &stop_rx);
                (self, holds)
            })
            .context("starting the arming thread")?;
        Ok(Arming { stop, thread })
    }

    /// Arms every request until `stop` is closed; then the ones still waiting. Holds end with
    /// it, and with the guard: no hold is made that nobody could release.
    fn serve(&mut self, mut ring: RingBuf<MapData>, stop: &OwnedFd) -> Holds {
        let mut holds = Holds::default();
        let mut guard_exited = self
            .guard
            .as_ref()
            .and_then(|g| g.exited().try_clone_to_owned().ok());
        loop {
            let mut fds = vec![
                PollFd::new(ring.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(exited) = &guard_exited {
                fds.push(PollFd::new(exited.as_fd(), PollFlags::POLLIN));
            }
            if let Err(e) = poll(&mut fds, PollTimeout::NONE)
                && e != nix::errno::Errno::EINTR
            {
                tracing::warn!("arming: poll failed: {e}");
                break;
            }
            let stopping = fds[1].any().unwrap_or(true);
            let guard_gone = fds.get(2).is_some_and(|f| f.any().unwrap_or(true));
            drop(fds);
            if (stopping || guard_gone)
                && let Err(e) = self.set_hold_gate(false)
            {
                tracing::warn!("{e:#}");
            }
            if guard_gone {
                tracing::warn!(
                    "the hold guard exited: traced processes are no longer held while new \
                     CUDA/NVML libraries are armed, and their first calls may go unseen"
                );
                guard_exited = None;
            }
            while let Some(item) = ring.next() {
                if item.len() < size_of::<ArmRequest>() {
                    continue;
                }
                // SAFETY: a whole ArmRequest, plain data written by the kernel side.
                let req = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ArmRequest>()) };
                drop(item);
                self.arm(&req, &mut holds);
            }
            if stopping {
                break;
            }
        }
        holds
    }

    fn arm(&mut self, req: &ArmRequest, holds: &mut Holds) {
        let pid = (req.pid_tgid >> 32) as u32;
        let file = PathBuf::from(format!("/proc/{pid}/fd/{}", req.fd));
        // The library's own path, for messages, while the process is there to say it.
        let lib = std::fs::read_link(&file).unwrap_or_else(|_| file.clone());
        match self.arm_file(&file) {
            // The kernel's identity of the file, if it saw it otherwise (an overlay's layers).
            Ok(id) if super::api::armed_key(id) != req.key && req.key > 2 => {
                if let Err(e) = self.mark_armed(req.key) {
                    tracing::warn!("{e:#}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("no API probes on {}: {e:#}", file.display()),
        }
        if req.stopped != 0 {
            resume(pid);
            let held = crate::procfs::boottime_ns().saturating_sub(req.ts_ns);
            if self.forget_hold(req.ts_ns) {
                holds.count += 1;
                holds.longest_ns = holds.longest_ns.max(held);
                tracing::debug!(
                    "held {pid} for {:.2} ms to arm {}",
                    held as f64 / 1e6,
                    lib.display()
                );
            } else {
                // No longer written down: the guard continued it at the limit (arming took
                // too long, or this tracer was stopped).
                holds.expired += 1;
                tracing::warn!(
                    "arming {} took {:.0} ms: the hold guard had continued process {pid} after \
                     {} s, before its API probes were on, so its first calls may go unseen",
                    lib.display(),
                    held as f64 / 1e6,
                    super::HOLD_LIMIT_NS / 1_000_000_000
                );
            }
        }
    }
}

impl Arming {
    /// Stops the thread once it has armed what was asked, and gives the programs back.
    pub fn finish(self) -> anyhow::Result<(EbpfBackend, Holds)> {
        drop(self.stop);
        self.thread
            .join()
            .map_err(|_| anyhow!("the arming thread panicked"))
    }
}

/// Continues a process the kernel stopped (harmless if it is not stopped).
fn resume(pid: u32) {
    if let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGCONT) {
        tracing::debug!("SIGCONT {pid}: {e}");
    }
}
