//! A session on the ptrace backend (`--backend ptrace`): `run` only so far, and without the
//! `dl*` and CUDA/NVML calls, which need breakpoints. The pipeline after the backend is the
//! eBPF session's, unchanged.
use std::time::Instant;

use anyhow::Context as _;

use super::{Config, Target, Watch, end, enrich, event_loop, exit_code, open_sink, read_trimmed};
use crate::{
    backend::ptrace,
    event::{RawBody, RawEvent},
    failure::{FailAs as _, Failure},
    model::{FORMAT_VERSION, Header},
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
    let mut launched = ptrace::launch(cmd)?;
    let mut pipeline = super::Pipeline::new(sink.as_mut(), enricher);
    pipeline.until = cfg.until.clone().map(Watch::new);
    let pid = launched.pid.as_raw() as u32;
    pipeline.announce(RawEvent {
        ts_ns: announced_at,
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
    });
    let shims = pipeline.enricher.shims_at_start();
    pipeline.header(&Header {
        format: "vgpu-trace".into(),
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        host: read_trimmed("/proc/sys/kernel/hostname"),
        backend: "ptrace".into(),
        mode: "run".into(),
        target: cmd.clone(),
        probed: Vec::new(),
        shims,
    });
    eprintln!(
        "vgpu-trace: tracing with ptrace, started in {:.0} ms; processes and library opens and \
         maps are seen, dl* and CUDA/NVML calls not yet",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let exit = std::mem::replace(&mut launched.exit, tokio::sync::oneshot::channel().1);
    let status = runtime.block_on(event_loop(
        &mut launched.source,
        &mut pipeline,
        &cfg.target,
        Some(exit),
        cfg.duration,
    ))?;
    end(&cfg, &mut pipeline, &mut launched.source, 0, false);
    eprintln!(
        "vgpu-trace: no verdict: it rests on dl* and CUDA/NVML calls, which the ptrace backend \
         does not see yet; the loads show which libraries each process mapped"
    );
    Ok(exit_code(status))
}
