//! What this kernel's verifier makes of the programs, per attach method: instructions
//! processed per program against the million-instruction budget, and the time to load and
//! attach everything; how soon `auto`'s fall back line comes when eBPF cannot be had; and what
//! perf-event uprobes (kernels before 6.6) cost a session's end and the next session's start.
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use super::proc::{measure, spread};
use super::{Bins, bpf, report::Report};

const GROUP: &str = "kernel: the verifier, load and attach, the fall back, releases";
const BUDGET: f64 = 1_000_000.0;
const METHODS: [&str; 3] = [
    "uprobe-multi",
    "perf-event-cookie",
    "perf-event-per-function",
];

fn doctor(bins: &Bins, method: &str) -> anyhow::Result<Value> {
    let m = measure(
        bins.tracer(&["doctor", "--kernel", "--format", "json"])
            .env("VGPU_TRACE_ATTACH", method),
    )?;
    serde_json::from_str(&m.stdout).context("doctor --kernel's JSON")
}

/// Milliseconds from starting `cmd` to a stderr line containing `needle`; the command is then
/// left to finish.
fn until_line(cmd: &mut Command, needle: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut at = None;
    for line in lines.map_while(Result::ok) {
        if at.is_none() && line.contains(needle) {
            at = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    child.wait()?;
    at.with_context(|| format!("{cmd:?} never said {needle:?}"))
}

pub fn run(bins: &Bins, runs: usize, report: &mut Report) -> anyhow::Result<()> {
    for method in METHODS {
        bpf::wait_released(Duration::from_secs(300)).context("earlier probes not released")?;
        let json = doctor(bins, method)?;
        let programs = json["programs"].as_array().cloned().unwrap_or_default();
        let count = |p: &Value| p["verified_insns"].as_f64().unwrap_or(f64::NAN);
        if method == METHODS[0] {
            for p in &programs {
                report.add(
                    GROUP,
                    format!("verifier: {} ({method})", p["name"].as_str().unwrap_or("?")),
                    format!(
                        "{:.0} instructions ({:.2} %), {:.1} ms",
                        count(p),
                        100.0 * count(p) / BUDGET,
                        p["micros"].as_f64().unwrap_or(0.0) / 1000.0
                    ),
                    count(p),
                    "instructions",
                    Some("≤ 100000"),
                    format!(
                        "VGPU_TRACE_ATTACH={method} vgpu-trace doctor --kernel --format json \
                         (bpf_prog_info.verified_insns)"
                    ),
                );
            }
        }
        let worst = programs
            .iter()
            .max_by(|a, b| count(a).total_cmp(&count(b)))
            .context("no programs")?;
        report.add(
            GROUP,
            format!(
                "verifier: the largest of {} programs ({method})",
                programs.len()
            ),
            format!(
                "{} at {:.0} instructions ({:.2} %)",
                worst["name"].as_str().unwrap_or("?"),
                count(worst),
                100.0 * count(worst) / BUDGET
            ),
            count(worst),
            "instructions",
            Some("≤ 100000"),
            format!("VGPU_TRACE_ATTACH={method} vgpu-trace doctor --kernel --format json"),
        );
        let mut totals = Vec::new();
        for _ in 0..runs {
            bpf::wait_released(Duration::from_secs(300)).context("earlier probes not released")?;
            let json = doctor(bins, method)?;
            totals.push(
                json["load_ms"].as_f64().unwrap_or(f64::NAN)
                    + json["attach_ms"].as_f64().unwrap_or(f64::NAN),
            );
        }
        let (min, median, max) = spread(totals);
        report.add(
            GROUP,
            format!("load and attach everything ({method}; min/median/max of {runs})"),
            format!("{min:.1} / {median:.1} / {max:.1} ms"),
            median,
            "ms",
            Some("≤ 50 ms"),
            "doctor --kernel: BTF read, object loaded, every program verified, tracepoints and \
             the host libc's dl* probes attached",
        );
    }

    // The fall back: a user namespace (EPERM), and a verifier past its deadline.
    let mut eperm = Vec::new();
    let mut deadline = Vec::new();
    for _ in 0..runs {
        bpf::wait_released(Duration::from_secs(300)).context("earlier probes not released")?;
        eperm.push(until_line(
            Command::new("unshare")
                .arg("-Ur")
                .arg(bins.path("vgpu-trace"))
                .args(["run", "--backend", "auto", "-o", "/dev/null", "--", "true"]),
            "tracing with ptrace",
        )?);
        deadline.push(until_line(
            bins.tracer(&["run", "--backend", "auto", "-o", "/dev/null", "--", "true"])
                .env("VGPU_TRACE_VERIFIER_DEADLINE_MS", "0"),
            "tracing with ptrace",
        )?);
    }
    for (what, times, how) in [
        (
            "auto's fall back line, BPF refused (user namespace)",
            eperm,
            "unshare -Ur vgpu-trace run --backend auto -- true: start to the line",
        ),
        (
            "auto's fall back line, verifier past its deadline",
            deadline,
            "VGPU_TRACE_VERIFIER_DEADLINE_MS=0 vgpu-trace run --backend auto -- true: start to \
             the line (the first program loaded counts as past it)",
        ),
    ] {
        let (min, median, max) = spread(times);
        report.add(
            GROUP,
            format!("{what} (min/median/max of {runs})"),
            format!("{min:.0} / {median:.0} / {max:.0} ms"),
            median,
            "ms",
            Some("≤ 200 ms"),
            how,
        );
    }

    // Perf-event uprobes: the session's end, and a session right after one.
    for method in METHODS {
        let mut ends = Vec::new();
        let mut next = Vec::new();
        let mut gone = Vec::new();
        for _ in 0..runs {
            bpf::wait_released(Duration::from_secs(300)).context("earlier probes not released")?;
            let m = measure(
                bins.tracer(&["run", "-o", "/dev/null", "--", "true"])
                    .env("VGPU_TRACE_ATTACH", method),
            )?;
            ends.push(m.wall.as_secs_f64() * 1000.0);
            let after = measure(
                bins.tracer(&["run", "-o", "/dev/null", "--", "true"])
                    .env("VGPU_TRACE_ATTACH", method),
            )?;
            next.push(after.armed_ms().unwrap_or(f64::NAN));
            gone.push(
                bpf::wait_released(Duration::from_secs(300))
                    .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1000.0),
            );
        }
        for (what, times) in [
            ("a session of `true`, start to exit", ends),
            ("arming right after such a session", next),
            ("probes gone after the second one exits", gone),
        ] {
            let (min, median, max) = spread(times);
            report.add(
                GROUP,
                format!("{what} ({method}; min/median/max)"),
                format!("{min:.0} / {median:.0} / {max:.0} ms"),
                median,
                "ms",
                None,
                format!("VGPU_TRACE_ATTACH={method} vgpu-trace run -o /dev/null -- true, twice"),
            );
        }
    }
    Ok(())
}
