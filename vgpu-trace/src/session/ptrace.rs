//! A session on the ptrace backend (`--backend ptrace`, or where BPF is refused): `run` and
//! `attach`. The pipeline after the backend is the eBPF session's, unchanged.
use std::time::{Duration, Instant};

use super::{Config, Target, Watch, end, enrich, exit_code, targets};
use crate::{
    backend::ptrace::{self, Began, Job, Release},
    failure::{FailAs as _, Failure},
    procfs,
};

/// How long the session waits for the engine to let go at its end.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

pub(super) fn trace(cfg: Config) -> anyhow::Result<i32> {
    let (job, mode, described) = match &cfg.target {
        Target::Run(cmd) => (Job::Run(cmd.clone()), "run", cmd.clone()),
        Target::Attach(specs) => (
            Job::Attach(targets::resolve(specs)?),
            "attach",
            specs.clone(),
        ),
        Target::System => {
            return Err(anyhow::anyhow!(
                "`attach --all` needs the eBPF backend: ptrace follows given processes only"
            ))
            .fail_as(Failure::Usage);
        }
        Target::Cgroup(_) => {
            return Err(anyhow::anyhow!(
                "`attach --unit`/`--cgroup` needs the eBPF backend: ptrace cannot see processes \
                 join a cgroup; attach to the service's pids instead"
            ))
            .fail_as(Failure::Usage);
        }
    };
    // The user's logs are checked before anything is seized.
    let mut logs = super::logfile::Followers::start(&cfg.logs)?;
    let mut sink = cfg.outputs.open()?;
    let mut enricher = enrich::Enricher::new(&cfg.shims, &cfg.shims_config)?;
    enricher.opens_unseen = matches!(job, Job::Attach(_));
    let started = Instant::now();
    // Before the command can exec: its announcement must sort before its exec.
    let announced_at = procfs::boottime_ns();
    let ptrace::Launched {
        began,
        mut source,
        exit,
        engine,
    } = ptrace::start(&job)?;
    let mut pipeline = super::Pipeline::new(sink.as_mut(), enricher, cfg.notices.clone());
    pipeline.until = cfg.until.clone().map(Watch::new);
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &began {
        Began::Command(pid) => {
            pipeline.announce(super::command_to_come(pid.as_raw() as u32, announced_at));
            cfg.notices
                .tell(format!("tracing with ptrace, started in {took_ms:.0} ms"));
        }
        Began::Attached { pids, ts_ns } => {
            for &pid in pids {
                pipeline.announce(super::existing(pid, *ts_ns));
            }
            cfg.notices.tell(format!(
                "attached with ptrace in {took_ms:.0} ms; following {} processes, \
                 Ctrl-C to stop",
                pids.len()
            ));
            // No system call stops: only writes through the C library are seen (a breakpoint
            // on `write`), not a Go runtime's own. Output to a file or a unit's journal is
            // read from there instead.
            let found = if cfg.logs.is_empty() {
                super::logfile::of_processes(pids)
            } else {
                Vec::new()
            };
            let output = match found.as_slice() {
                _ if !cfg.logs.is_empty() => String::new(),
                [] => "; of their output only what goes through the C library's write() is \
                       seen (not a Go program's own logging): give Ollama's log with --log or \
                       --journal"
                    .into(),
                found => format!(
                    "; their output is read from {}",
                    found
                        .iter()
                        .map(|s| match s {
                            super::logfile::LogSource::File(p) => p.display().to_string(),
                            super::logfile::LogSource::Journal(u) => format!("the journal of {u}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            if !found.is_empty() {
                match super::logfile::Followers::start_from_now(&found) {
                    Ok(followers) => logs = followers,
                    Err(e) => cfg
                        .notices
                        .tell(format!("cannot follow their output: {e:#}")),
                }
            }
            cfg.notices.tell(format!(
                "no system call stops under ptrace attach: loads are read from ld.so's list \
                 of objects, the paths tried before each are predicted{output}"
            ));
        }
    }
    pipeline.logs = logs;
    super::write_header(&mut pipeline, "ptrace", mode, described, Vec::new());
    let status = super::run_event_loop(&mut source, &mut pipeline, &cfg, exit)?;
    // The engine's last events come before its answer, so they are taken in below.
    let released = engine.release(RELEASE_WAIT);
    end(&cfg, &mut pipeline, &mut source, 0, 0);
    match released {
        Release::Done {
            threads,
            detached: true,
        } => cfg.notices.tell(format!(
            "detached from {threads} threads, every breakpoint removed"
        )),
        Release::Done {
            threads,
            detached: false,
        } => cfg.notices.tell(format!(
            "breakpoints removed from {threads} threads; the command runs on \
             with its seccomp filter served until it ends"
        )),
        Release::NoAnswer => cfg.notices.tell(format!(
            "warning: the ptrace engine did not answer in {RELEASE_WAIT:?}; it \
             lets go of the rest as each thread stops"
        )),
        Release::Ended => {}
    }
    Ok(exit_code(status))
}
