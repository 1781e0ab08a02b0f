//! A session on the ptrace backend (`--backend ptrace`): `run` only so far. The pipeline
//! after the backend is the eBPF session's, unchanged.
use std::time::Instant;

use super::{Config, Target, Watch, end, enrich, exit_code, open_sink};
use crate::{
    backend::ptrace,
    failure::{FailAs as _, Failure},
    procfs,
};

pub(super) fn trace(cfg: Config) -> anyhow::Result<i32> {
    let Target::Run(cmd) = &cfg.target else {
        return Err(anyhow::anyhow!(
            "the ptrace backend traces `run` only so far; attach needs --backend ebpf"
        ))
        .fail_as(Failure::Usage);
    };
    let mut sink = open_sink(&cfg)?;
    let enricher = enrich::Enricher::new(&cfg.shims, &cfg.shims_config)?;
    let started = Instant::now();
    // Before the command can exec: its announcement must sort before its exec.
    let announced_at = procfs::boottime_ns();
    let ptrace::Launched {
        pid,
        mut source,
        exit,
    } = ptrace::launch(cmd)?;
    let mut pipeline = super::Pipeline::new(sink.as_mut(), enricher);
    pipeline.until = cfg.until.clone().map(Watch::new);
    pipeline.announce(super::command_to_come(pid.as_raw() as u32, announced_at));
    super::write_header(&mut pipeline, "ptrace", "run", cmd.clone(), Vec::new());
    eprintln!(
        "vgpu-trace: tracing with ptrace, started in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let status = super::run_event_loop(&mut source, &mut pipeline, &cfg, Some(exit))?;
    end(&cfg, &mut pipeline, &mut source, 0);
    Ok(exit_code(status))
}
