//! One tracing session: arm the backend, start or find the targets, then move events
//! backend → reorder → collector → sinks until the targets are gone or the user stops it.
mod arm;
pub mod cgroup;
mod enrich;
mod interrupt;
pub mod logfile;
mod notices;
mod pipeline;
mod ptrace;
mod reader;
mod reorder;
mod roots;
pub mod targets;

use std::{
    os::fd::{AsRawFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{sys::wait::WaitStatus, unistd::Pid};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

pub use self::notices::Notices;
use self::pipeline::Pipeline;
pub use self::pipeline::run_records;
use crate::{
    backend::{
        Source,
        ebpf::{self, EbpfBackend, EventStream, Holds},
    },
    event::{RawBody, RawEvent},
    failure::{FailAs as _, Failure},
    judge::expect::{Rule, Watch},
    model::{FORMAT_VERSION, Header, Summary},
    procfs,
    sink::Outputs,
};

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start this command and follow it and its descendants.
    Run(Vec<String>),
    /// Follow running processes (pids or names) and their descendants.
    Attach(Vec<String>),
    /// Follow every process of a cgroup (a systemd unit's), now and as it restarts.
    Cgroup(cgroup::CgroupSpec),
    /// Every process on the machine.
    System,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub target: Target,
    /// Where the timeline, the record and the Perfetto trace go.
    pub outputs: Outputs,
    pub ring_bytes: u32,
    /// `api=PATH` shims, and the configuration file read (when it exists) at the first load.
    pub shims: Vec<String>,
    pub shims_config: PathBuf,
    /// Stop a process that opens an unarmed CUDA/NVML library until its API probes are on.
    pub stop_to_arm: bool,
    /// Stop tracing after this long (a started command keeps running).
    pub duration: Option<Duration>,
    /// Stop tracing once an event (or the verdict) matches this rule.
    pub until: Option<Rule>,
    pub backend: BackendChoice,
    /// Logs to follow beside the traced processes' own output (`attach --log`/`--journal`).
    pub logs: Vec<logfile::LogSource>,
    /// Where the session's one-line notices go (the command line: stderr).
    pub notices: Notices,
    /// `watch`: named targets are also followed when they start later, the session runs
    /// until stopped, and an output that fails ends it (exit 2) rather than being dropped.
    pub watch: bool,
}

/// Which backend traces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// eBPF when the kernel loads it; ptrace otherwise (not for `attach --all`).
    #[default]
    Auto,
    /// eBPF or nothing: never falls back.
    Ebpf,
    /// ptrace: where BPF is refused.
    Ptrace,
}

impl BackendChoice {
    /// `VGPU_TRACE_BACKEND` (`auto`, `ebpf`, `ptrace`), as the command line reads it; `auto`
    /// when unset. A test suite sets `ebpf` so that a kernel refusing the programs fails it.
    pub fn from_env() -> Self {
        use clap::ValueEnum as _;
        std::env::var("VGPU_TRACE_BACKEND")
            .ok()
            .and_then(|v| Self::from_str(&v, true).ok())
            .unwrap_or_default()
    }
}

/// How long an event waits for stragglers from other CPUs before it is processed.
const REORDER_WINDOW_NS: u64 = 20_000_000;
/// How often the ring buffer is drained: the kernel wakes the reader only when it fills, so
/// that a traced process does not pay for a wakeup per record.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
const TICK: Duration = Duration::from_millis(50);
/// How often living processes are checked for having vanished without a traced exit.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// Runs a session; returns the process exit code (the traced command's, in `run` mode).
pub fn trace(cfg: Config) -> anyhow::Result<i32> {
    if cfg.watch && cfg.backend == BackendChoice::Ptrace {
        // ptrace can follow only what it attached to: a serve started later would be missed.
        return Err(anyhow::anyhow!(
            "watch needs the eBPF backend: ptrace cannot follow processes that start later"
        ))
        .fail_as(Failure::Usage);
    }
    if cfg.backend == BackendChoice::Ptrace {
        return ptrace::trace(cfg);
    }
    interrupt::catch();
    let mut not_loaded = false;
    let traced = trace_ebpf(&cfg, &mut not_loaded);
    interrupt::release();
    match traced {
        Err(err)
            if not_loaded
                && cfg.backend == BackendChoice::Auto
                && !cfg.watch
                && !matches!(cfg.target, Target::System | Target::Cgroup(_)) =>
        {
            cfg.notices.tell(format!(
                "eBPF not loaded: {}; tracing with ptrace",
                ebpf::Refused::one_line(&err)
            ));
            ptrace::trace(cfg)
        }
        other => other,
    }
}

/// An eBPF session; `not_loaded` tells a failure to load the programs from any other.
fn trace_ebpf(cfg: &Config, not_loaded: &mut bool) -> anyhow::Result<i32> {
    let cfg = cfg.clone();
    let mut sink = cfg.outputs.open()?;
    // Bad input is told as such before anything is loaded (exit 2, not "cannot trace").
    // Attach targets come first anyway: their library paths say where their shims are.
    let cgroup = match &cfg.target {
        Target::Cgroup(spec) => Some(spec.resolve()?),
        _ => None,
    };
    let logs = logfile::Followers::start(&cfg.logs)?;
    let roots = match (&cfg.target, &cgroup) {
        // A watched name need not run yet: it is followed from its start.
        (Target::Attach(specs), _) if cfg.watch => targets::resolve_running(specs)?,
        (Target::Attach(specs), _) => targets::resolve(specs)?,
        (_, Some(cgroup)) => cgroup.members(),
        _ => Vec::new(),
    };
    if matches!(cfg.target, Target::Attach(_)) {
        for line in targets::where_they_run(&roots) {
            cfg.notices.tell(line);
        }
    }
    let mut enricher = enrich::Enricher::new(&cfg.shims, &cfg.shims_config)?;
    let started = Instant::now();
    let loaded = EbpfBackend::load(&ebpf::Options {
        follow_all: matches!(cfg.target, Target::System),
        ring_bytes: cfg.ring_bytes,
        stop_to_arm: cfg.stop_to_arm,
        follow_cgroup: cgroup.as_ref().map(|c| (c.id, c.level)),
        follow_comms: match &cfg.target {
            Target::Attach(specs) if cfg.watch => targets::names(specs),
            _ => Vec::new(),
        },
        // Only `auto` can fall back: it gives the verifier a deadline, `--backend ebpf` waits.
        verifier_deadline: (cfg.backend == BackendChoice::Auto).then(ebpf::load::auto_deadline),
        recount: false,
        stopping: interrupt::stopping,
    });
    if let Some(signal) = interrupt::caught() {
        if let Ok((backend, _)) = loaded {
            backend.release();
        }
        let mut pipeline = Pipeline::new(sink.as_mut(), enricher, cfg.notices.clone());
        write_header(
            &mut pipeline,
            "ebpf",
            mode_of(&cfg.target),
            Vec::new(),
            Vec::new(),
        );
        return Ok(stopped_while_arming(&cfg, &mut pipeline, signal));
    }
    let (mut backend, mut events) = loaded.inspect_err(|_| *not_loaded = true)?;
    tracing::debug!("programs loaded and attached in {:?}", started.elapsed());
    let library_path: Vec<String> = match &cfg.target {
        Target::Run(_) => arm::library_path(std::env::var("LD_LIBRARY_PATH").ok().as_deref()),
        Target::Attach(_) | Target::Cgroup(_) => roots
            .iter()
            .flat_map(|&pid| {
                let env = procfs::environ(pid);
                let value = env
                    .iter()
                    .find_map(|e| e.value.strip_prefix("LD_LIBRARY_PATH="));
                arm::library_path(value)
            })
            .collect(),
        Target::System => Vec::new(),
    };
    arm::at_start(&mut backend, &enricher.shim_paths(), &library_path);
    tracing::debug!("known CUDA/NVML libraries armed at {:?}", started.elapsed());

    let mut pipeline = Pipeline::new(sink.as_mut(), enricher, cfg.notices.clone());
    pipeline.output_errors_end = cfg.watch;
    if cfg.watch {
        pipeline.judge = None;
    }
    pipeline.until = cfg.until.clone().map(Watch::new);
    pipeline.logs = logs;
    let mut launched = None;
    let mut followed = 1;
    let (mode, described) = match &cfg.target {
        Target::Run(cmd) => {
            backend.probe_libraries(&ebpf::dl_libraries(&[]))?;
            let child = crate::backend::launch::prepare(cmd, None)?;
            backend.follow(child.pid.as_raw() as u32)?;
            pipeline.announce(command_to_come(
                child.pid.as_raw() as u32,
                procfs::boottime_ns(),
            ));
            launched = Some(child);
            ("run", cmd.clone())
        }
        Target::Attach(_) | Target::Cgroup(_) => {
            let pids = procfs::with_descendants(&roots);
            backend.probe_libraries(&ebpf::dl_libraries(&pids))?;
            for &pid in &pids {
                backend.follow(pid)?;
            }
            // Children forked between the scan and `follow` were missed by the fork probe.
            let mut all = pids.clone();
            for pid in procfs::with_descendants(&roots) {
                if !all.contains(&pid) {
                    backend.follow(pid)?;
                    all.push(pid);
                }
            }
            followed = all.len();
            let now = procfs::boottime_ns();
            for pid in all {
                pipeline.announce(existing(pid, now));
            }
            let described = match &cfg.target {
                Target::Attach(specs) => specs.clone(),
                Target::Cgroup(spec) => spec.describe(),
                _ => Vec::new(),
            };
            ("attach", described)
        }
        Target::System => {
            backend.probe_libraries(&ebpf::dl_libraries(&procfs::pids()))?;
            ("system", Vec::new())
        }
    };
    let probed = backend
        .probed_libraries()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    write_header(&mut pipeline, "ebpf", mode, described, probed);
    let probed = backend.probed_libraries().len();
    let arming = backend.arm_in_background()?;
    if let Some(signal) = interrupt::caught() {
        // The command, if any, never starts: its process ends when `launched` is dropped.
        let code = stopped_while_arming(&cfg, &mut pipeline, signal);
        arming.finish()?.0.release();
        return Ok(code);
    }
    let armed_ms = started.elapsed().as_secs_f64() * 1000.0;
    cfg.notices.tell(format!(
        "armed in {armed_ms:.0} ms ({probed} libraries probed); {}",
        match &cfg.target {
            Target::Run(_) => "starting the command".to_string(),
            Target::Attach(specs) if cfg.watch => format!(
                "following {followed} processes, and any named {} that starts; Ctrl-C to stop",
                targets::names(specs).join(", ")
            ),
            Target::Attach(_) => format!("following {followed} processes, Ctrl-C to stop"),
            Target::Cgroup(_) => format!(
                "following {followed} processes of cgroup {}, and any that starts in it; Ctrl-C to stop",
                cgroup.as_ref().map_or("", |c| c.path.as_str())
            ),
            Target::System => "tracing every process, Ctrl-C to stop".to_string(),
        }
    ));

    let child = match launched {
        Some(l) => {
            let pid = l.pid;
            l.release()?;
            Some(pid)
        }
        None => None,
    };

    let status = run_event_loop(
        &mut events,
        &mut pipeline,
        &cfg,
        child.map(wait_in_background),
    )?;

    // Arming ends first (what it was asked is done), then the last records and everything
    // still waiting.
    let (backend, holds) = arming.finish()?;
    let missed = backend.missed_runs();
    let undecodable = events.undecodable;
    let skipped = missed.iter().map(|(_, n)| n).sum();
    end(&cfg, &mut pipeline, &mut events, undecodable, skipped);
    report_kernel(&cfg.notices, &events, holds, &missed);
    backend.release();
    if let Some(error) = pipeline.output_error.take() {
        return Err(anyhow::anyhow!(error)).fail_as(Failure::Usage);
    }
    Ok(exit_code(status))
}

/// `mode` of the record's header.
fn mode_of(target: &Target) -> &'static str {
    match target {
        Target::Run(_) => "run",
        Target::Attach(_) | Target::Cgroup(_) => "attach",
        Target::System => "system",
    }
}

/// Ends a session that a signal stopped before it traced anything: the record gets its
/// summary (so it stays valid), and the user a line that says so. The exit code is the
/// signal's (128 + n).
fn stopped_while_arming(cfg: &Config, pipeline: &mut Pipeline<'_>, signal: i32) -> i32 {
    cfg.notices.tell(format!(
        "stopped by {} while arming: nothing was traced",
        interrupt::name(signal)
    ));
    end(cfg, pipeline, &mut NoEvents, 0, 0);
    128 + signal
}

/// The events of a session that has none.
struct NoEvents;

impl Source for NoEvents {
    fn drain(&mut self, _: &mut Vec<RawEvent>, _: usize) -> usize {
        0
    }

    fn fd(&self) -> RawFd {
        -1
    }

    fn lost(&self) -> u64 {
        0
    }
}

/// Takes the last events through, closes the sinks with the summary and reports it.
fn end(
    cfg: &Config,
    pipeline: &mut Pipeline<'_>,
    events: &mut dyn Source,
    undecodable: u64,
    missed: u64,
) {
    pipeline.pump(events, 0);
    pipeline.follow_logs();
    pipeline.note_losses(events);
    pipeline.release(u64::MAX);
    pipeline.finish_calls();
    let summary = Summary {
        lost: pipeline.lost_reported,
        undecodable,
        missed,
        verdict: pipeline
            .judge
            .as_ref()
            .map(crate::judge::verdict::Judge::verdict),
        ..pipeline.collector.summary()
    };
    pipeline.finish(&summary);
    // The timeline on the terminal has shown the verdict already; JSON or a file has not.
    // A watch has a verdict per pass, told as each ended.
    let verdict_shown = cfg.outputs.text_on_stdout() || cfg.watch;
    report_summary(&cfg.notices, &summary, !verdict_shown);
}

/// `run`'s status: the command's own.
fn exit_code(status: Option<WaitStatus>) -> i32 {
    match status {
        Some(WaitStatus::Exited(_, code)) => code,
        Some(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
        _ => 0,
    }
}

fn report_summary(notices: &Notices, s: &Summary, with_verdict: bool) {
    if with_verdict && let Some(v) = &s.verdict {
        notices.tell(format!(
            "verdict: {}",
            crate::sanitize::plain(&v.to_string())
        ));
    }
    notices.tell(format!(
        "{} events, {} processes, {} calls, {} lost",
        s.events, s.processes, s.calls, s.lost
    ));
    if s.lost > 0 {
        notices.tell(format!(
            "warning: {} events were lost because the ring buffer was full; raise --ring-size",
            s.lost
        ));
    }
}

/// What only the eBPF backend has to say: holds, kernel-side failures, skipped runs.
fn report_kernel(notices: &Notices, events: &EventStream, holds: Holds, missed: &[(String, u64)]) {
    for (program, runs) in missed {
        notices.tell(format!(
            "warning: the kernel skipped {runs} runs of {program} (that program was already \
             running on the same CPU, preempted or interrupted): events of traced processes \
             may be missing (the count is for every process on the machine)"
        ));
    }
    if holds.count > 0 {
        notices.tell(format!(
            "held traced processes {} times while arming new CUDA/NVML or C libraries (longest {:.1} ms)",
            holds.count,
            holds.longest_ns as f64 / 1e6
        ));
    }
    if holds.expired > 0 {
        notices.tell(format!(
            "warning: the hold guard ended {} hold(s) after {} s, before the library \
             was armed: those processes' first CUDA/NVML calls may be missing",
            holds.expired,
            ebpf::HOLD_LIMIT_NS / 1_000_000_000
        ));
    }
    if let Ok(e) = events.errors()
        && (e.no_scratch > 0 || e.follow_map_full > 0 || e.arm_ring_full > 0)
    {
        notices.tell(format!(
            "warning: kernel side failures: {} records not made (no free scratch slot), {} processes not followed (map full), {} libraries not armed (ring full)",
            e.no_scratch, e.follow_map_full, e.arm_ring_full
        ));
    }
    if let Ok(e) = events.errors()
        && e.output_over_budget > 0
    {
        notices.tell(format!(
            "{} writes to stdout/stderr were not kept: over {} KiB a second from one process",
            e.output_over_budget,
            vgpu_trace_common::OUTPUT_BUDGET_PER_S >> 10
        ));
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The command `run` is about to start, announced before its exec (which speaks for it) and
/// stamped no later than that exec.
fn command_to_come(pid: u32, ts_ns: u64) -> RawEvent {
    RawEvent {
        ts_ns,
        tgid: pid,
        tid: pid,
        body: RawBody::Existing {
            ppid: std::process::id(),
            comm: String::new(),
            exe: None,
            argv: Vec::new(),
            env: Vec::new(),
            announce: false,
        },
    }
}

/// The record's header: this host, this session, the shims known at start.
fn write_header(
    pipeline: &mut Pipeline<'_>,
    backend: &str,
    mode: &str,
    target: Vec<String>,
    probed: Vec<String>,
) {
    let shims = pipeline.enricher.shims_at_start();
    pipeline.header(&Header {
        format: "vgpu-trace".into(),
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        host: read_trimmed("/proc/sys/kernel/hostname"),
        backend: backend.into(),
        mode: mode.into(),
        target,
        probed,
        shims,
    });
}

/// Runs [`event_loop`] on a runtime of its own until the session is over.
fn run_event_loop(
    events: &mut dyn Source,
    pipeline: &mut Pipeline<'_>,
    cfg: &Config,
    child_exit: Option<ChildExit>,
) -> anyhow::Result<Option<WaitStatus>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?
        .block_on(event_loop(
            events,
            pipeline,
            &cfg.target,
            child_exit,
            cfg.duration,
            &cfg.notices,
            cfg.watch,
        ))
}

/// A process running before tracing began, described from /proc, as of `ts_ns`.
fn existing(pid: u32, ts_ns: u64) -> RawEvent {
    let stat = procfs::stat(pid);
    RawEvent {
        ts_ns,
        tgid: pid,
        tid: pid,
        body: RawBody::Existing {
            ppid: stat.as_ref().map_or(0, |s| s.ppid),
            comm: stat.map(|s| s.comm).unwrap_or_default(),
            exe: procfs::exe(pid).map(|e| e.to_string_lossy().as_ref().into()),
            argv: procfs::cmdline(pid),
            env: procfs::environ(pid),
            announce: true,
        },
    }
}

/// The kernel ring buffer's size unless told otherwise (`--ring-size 8M`).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// Borrowed fd for tokio's reactor; the backend keeps ownership.
struct Borrowed(RawFd);
impl AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

async fn readable(fd: Option<&AsyncFd<Borrowed>>) {
    match fd {
        Some(fd) => match fd.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Where the end of `run`'s command is told.
type ChildExit = tokio::sync::oneshot::Receiver<nix::Result<WaitStatus>>;

/// Waits for `pid` (not traced by us) on a thread of its own.
fn wait_in_background(pid: Pid) -> ChildExit {
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(nix::sys::wait::waitpid(pid, None));
    });
    exit_rx
}

async fn event_loop(
    events: &mut dyn Source,
    pipeline: &mut Pipeline<'_>,
    target: &Target,
    child_exit: Option<ChildExit>,
    duration: Option<Duration>,
    notices: &Notices,
    watch: bool,
) -> anyhow::Result<Option<WaitStatus>> {
    // SAFETY: both fds belong to `events`, which outlives these registrations.
    let register = |fd: RawFd| {
        unsafe { AsyncFd::register(Borrowed(fd)) }
            .map_err(|_| anyhow::anyhow!("cannot poll the event source's fd {fd}"))
    };
    let ring = register(events.fd())?;
    let logs = events.log_fd().map(register).transpose()?;
    // The event loop's handlers from here on; a signal that came between arming and them was
    // only noted, and counts as theirs.
    interrupt::release();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let child = child_exit.is_some();
    let mut exit_rx = child_exit.unwrap_or_else(|| tokio::sync::oneshot::channel().1);
    let mut child_status: Option<WaitStatus> = None;
    let mut interrupts = 0;
    match interrupt::caught() {
        // In `run` mode the command got the same Ctrl-C: wait for it, as after any first one.
        Some(libc::SIGINT) if child => {
            interrupts = 1;
            notices.tell("waiting for the command to exit (Ctrl-C again to stop now)");
        }
        Some(_) => return Ok(None),
        None => {}
    }
    let mut tick = tokio::time::interval(TICK);
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_liveness = Instant::now();
    // Far enough away to never fire when no duration was asked for.
    let deadline =
        tokio::time::Instant::now() + duration.unwrap_or(Duration::from_secs(100 * 365 * 86_400));

    loop {
        tokio::select! {
            () = readable(Some(&ring)) => pipeline.pump(events, REORDER_WINDOW_NS),
            () = readable(logs.as_ref()) => events.flush_logs(),
            _ = interrupt.recv() => {
                interrupts += 1;
                // In `run` mode the command got the same Ctrl-C; wait for it to end,
                // unless the user insists.
                if !child || child_status.is_some() || interrupts > 1 {
                    break;
                }
                notices.tell("waiting for the command to exit (Ctrl-C again to stop now)");
            }
            _ = terminate.recv() => break,
            () = tokio::time::sleep_until(deadline) => {
                notices.tell(format!("recorded for {:?}; stopping", duration.unwrap_or_default()));
                break;
            }
            status = &mut exit_rx, if child && child_status.is_none() => {
                child_status = Some(status.context("waiting for the command")?.context("waiting for the command")?);
            }
            _ = drain.tick() => pipeline.pump(events, REORDER_WINDOW_NS),
            _ = tick.tick() => {
                pipeline.pump(events, REORDER_WINDOW_NS);
                pipeline.follow_logs();
                pipeline.note_losses(events);
                if last_liveness.elapsed() >= LIVENESS_EVERY {
                    last_liveness = Instant::now();
                    pipeline.forget_vanished();
                }
                pipeline.tick();
                if pipeline.until_met {
                    break;
                }
                let done = match target {
                    // Whatever it follows now, a watch waits for the next to start.
                    _ if watch => false,
                    Target::Run(_) => child_status.is_some() && pipeline.collector.live_pids().is_empty(),
                    Target::Attach(_) => pipeline.collector.live_pids().is_empty(),
                    // A service may restart: it is followed until told to stop.
                    Target::System | Target::Cgroup(_) => false,
                };
                if done {
                    break;
                }
            }
        }
    }
    Ok(child_status)
}
