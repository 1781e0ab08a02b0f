//! `cargo xtask bench`: what tracing costs, each figure measured in the same run as its
//! baseline (untraced, bare uprobes, bpftrace, ltrace) and printed as a table and as JSON.
//!
//! - overhead: per-iteration cost of dl* calls on a loaded library, against the floor.
//! - sessions: arming, a session right after another, releasing probes, attach.
//! - holds: how long a process is stopped while a new CUDA library is armed, and the lab's
//!   era-B discovery traced against untraced.
//! - load: bursts of events: loss with the default ring, the tracer's peak memory, rates.
//! - kernel: the verifier's count per program and attach method, load and attach time, the
//!   fall back line's latency, perf-event uprobes' release.
//! - soak: 10,000 discovery passes under `watch`: its memory, fds and records, and a scrape.
//! - attach: a system-call loop's rate with a tracer attached (eBPF, ptrace) against alone.
mod attach;
mod bpf;
mod kernel;
mod load;
mod overhead;
mod proc;
mod report;
mod sessions;
mod soak;

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use self::report::Report;
use crate::{cargo, exec, is_root, target_dir, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Loop iterations of the dlopen+dlsym+dlclose overhead measurement (ltrace runs 1/100).
    #[arg(long, default_value_t = 200_000)]
    iterations: u64,
    /// Repetitions of each session measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where the JSON report goes (default: target/bench/bench.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only these groups: overhead, sessions, holds, load, kernel, soak, attach (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The built binaries the measurements run.
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn cmd(&self, name: &str) -> Command {
        Command::new(self.path(name))
    }

    /// `vgpu-trace ARGS...`, with cargo's library path kept out of the traced environment.
    pub fn tracer(&self, args: &[&str]) -> Command {
        let mut c = self.cmd("vgpu-trace");
        c.args(args).env_remove("LD_LIBRARY_PATH");
        c
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(is_root(), "the benchmark attaches uprobes and needs root");
    for tool in ["bpftrace", "ltrace"] {
        if !have(tool) {
            eprintln!("xtask bench: installing {tool} (baseline)");
            exec(
                Command::new("apt-get")
                    .args(["install", "-y", tool])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        }
    }
    exec(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "vgpu-trace",
        "-p",
        "vgpu-trace-fixtures",
        "-p",
        "vgpu-lab",
        "-p",
        "vgpu-cuda",
        "-p",
        "vgpu-nvml",
        "--bins",
        "--lib",
        "--examples",
    ]))?;
    let bins = Bins {
        dir: target_dir().join("release"),
    };
    let wanted = |group: &str| opts.only.is_empty() || opts.only.iter().any(|g| g == group);
    let mut report = Report::default();
    if wanted("overhead") {
        overhead::run(&bins, opts.iterations, &mut report)?;
    }
    if wanted("sessions") {
        sessions::run(&bins, opts.runs, &mut report)?;
    }
    if wanted("holds") {
        sessions::holds(&bins, opts.runs, &mut report)?;
    }
    if wanted("load") {
        load::run(&bins, &mut report)?;
    }
    if wanted("kernel") {
        kernel::run(&bins, opts.runs, &mut report)?;
    }
    if wanted("soak") {
        soak::run(&bins, &mut report)?;
    }
    if wanted("attach") {
        attach::run(&bins, &mut report)?;
    }
    report.print();
    let json = opts
        .json
        .clone()
        .unwrap_or_else(|| target_dir().join("bench/bench.json"));
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json, report.to_json()?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("\nxtask bench: JSON report in {}", json.display());
    Ok(())
}
