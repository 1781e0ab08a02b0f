//! Bursts of events: a loop of dlopen+dlsym without dlclose (four traced events an iteration,
//! no single-stepped probe) shows the in-kernel cost against the floor, what the default ring
//! loses, how fast the tracer drains, and its peak memory; a synthetic stream shows the
//! userspace pipeline's own rate.
use std::process::Command;

use super::overhead::floor_program;
use super::proc::{Measured, measure};
use super::{Bins, report::Report};

const GROUP: &str = "load: dlopen+dlsym bursts (4 events an iteration), default ring";

fn burst(bins: &Bins, iterations: u64) -> anyhow::Result<Measured> {
    let file = std::env::temp_dir().join("vgpu-trace-bench-burst.jsonl");
    let m = measure(
        bins.tracer(&["run", "--format", "jsonl", "-o"])
            .arg(&file)
            .arg("--")
            .arg(bins.path("dl-bench"))
            .arg(iterations.to_string())
            .arg("--no-dlclose"),
    );
    let _ = std::fs::remove_file(&file);
    m
}

fn events_and_lost(m: &Measured) -> anyhow::Result<(u64, u64)> {
    m.events_and_lost()
        .ok_or_else(|| anyhow::anyhow!("no event count from the tracer:\n{}", m.stderr))
}

pub fn run(bins: &Bins, report: &mut Report) -> anyhow::Result<()> {
    // The in-kernel cost and the loss, on the 200k-iteration burst.
    let n = 200_000u64;
    let fixture = format!("{} {n} --no-dlclose", bins.path("dl-bench").display());
    let floor = measure(Command::new("bpftrace").args([
        "-q",
        "-o",
        "/dev/null",
        "-e",
        &floor_program(&["dlopen", "dlsym"]),
        "-c",
        &fixture,
    ]))?
    .fact::<f64>("ns_per_iter")?;
    let untraced = measure(bins.cmd("dl-bench").args([&n.to_string(), "--no-dlclose"]))?
        .fact::<f64>("ns_per_iter")?;
    let traced = burst(bins, n)?;
    let ours = traced.fact::<f64>("ns_per_iter")?;
    report.add(
        GROUP,
        "in-kernel cost, traced loop against the floor",
        format!(
            "{:.2}× ({:.2} vs {:.2} µs/iter; untraced {:.2})",
            ours / floor,
            ours / 1000.0,
            floor / 1000.0,
            untraced / 1000.0
        ),
        ours / floor,
        "× floor",
        Some("≤ 1.5× floor"),
        format!(
            "dl-bench {n} --no-dlclose under `vgpu-trace run --format jsonl -o FILE` vs bpftrace \
             with empty uprobe+uretprobe programs on dlopen and dlsym"
        ),
    );
    let (events, lost) = events_and_lost(&traced)?;
    report.add(
        GROUP,
        "events lost in a 200k-iteration burst",
        format!(
            "{lost} of {} ({:.1} %)",
            events + lost,
            100.0 * lost as f64 / (events + lost).max(1) as f64
        ),
        lost as f64,
        "events",
        Some("0"),
        format!("vgpu-trace run --format jsonl -o FILE -- dl-bench {n} --no-dlclose"),
    );
    report.add(
        GROUP,
        "tracer wall time for that burst",
        format!(
            "{:.2} s (the loop: {:.2} s)",
            traced.wall.as_secs_f64(),
            ours * n as f64 / 1e9
        ),
        traced.wall.as_secs_f64(),
        "s",
        None,
        "the same run",
    );

    // The 50k-iteration burst: how long the tracer needs for 200k events.
    let small = burst(bins, 50_000)?;
    let (events, _) = events_and_lost(&small)?;
    let busy = small.wall.as_secs_f64() - small.armed_ms().unwrap_or(0.0) / 1000.0;
    report.add(
        GROUP,
        "end to end: 200k events, tracer time after arming",
        format!("{busy:.2} s, {:.0} events/s", events as f64 / busy),
        events as f64 / busy,
        "events/s",
        None,
        "vgpu-trace run --format jsonl -o FILE -- dl-bench 50000 --no-dlclose",
    );
    report.add(
        GROUP,
        "tracer peak RSS at 200k events",
        format!("{:.1} MB", small.max_rss_kb as f64 / 1024.0),
        small.max_rss_kb as f64 / 1024.0,
        "MB",
        None,
        "the same run (wait4 ru_maxrss)",
    );
    let big = burst(bins, 250_000)?;
    let (events, lost) = events_and_lost(&big)?;
    report.add(
        GROUP,
        "tracer peak RSS at 1M events",
        format!(
            "{:.1} MB ({} events, {lost} lost)",
            big.max_rss_kb as f64 / 1024.0,
            events
        ),
        big.max_rss_kb as f64 / 1024.0,
        "MB",
        Some("≤ 50 MB, flat in event count"),
        "vgpu-trace run --format jsonl -o FILE -- dl-bench 250000 --no-dlclose (wait4 ru_maxrss)",
    );

    let synthetic = bins.path("examples/pipeline-rate");
    if synthetic.exists() {
        let m = measure(&mut Command::new(&synthetic))?;
        let rate: f64 = m.fact("events_per_s")?;
        report.add(
            GROUP,
            "userspace pipeline: decode → collector → enrichment → JSONL",
            format!("{rate:.0} events/s"),
            rate,
            "events/s",
            Some("≥ 1 M/s"),
            "target/release/examples/pipeline-rate (synthetic dlopen/dlsym records, JSONL to /dev/null)",
        );
    } else {
        report.add(
            GROUP,
            "userspace pipeline: decode → collector → enrichment → JSONL",
            "n/a (no synthetic bench in this build)",
            f64::NAN,
            "events/s",
            Some("≥ 1 M/s"),
            "target/release/examples/pipeline-rate",
        );
    }
    Ok(())
}
