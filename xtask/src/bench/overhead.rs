//! Per-iteration cost of dl* calls on an already-loaded library: untraced, under bare uprobes
//! (bpftrace with empty programs: the floor), under vgpu-trace writing every event to JSONL,
//! under bpftrace printing the strings, under vgpu-trace's ptrace backend next to the stops
//! alone (a tracer doing nothing but trap and return: the floor of any ptrace tracer), and
//! under ltrace.
use std::path::Path;
use std::process::Command;

use super::proc::{Measured, measure};
use super::{Bins, report::Report};

fn libc_path() -> &'static str {
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("libc")
}

fn ns_per_iter(m: &Measured) -> anyhow::Result<f64> {
    m.fact("ns_per_iter")
}

fn bpftrace(program: &str, fixture: &str) -> Command {
    let mut c = Command::new("bpftrace");
    c.args(["-q", "-o", "/dev/null", "-e", program, "-c", fixture]);
    c
}

/// Empty entry and return programs on each function: what any uprobe tracer pays.
pub fn floor_program(funcs: &[&str]) -> String {
    let libc = libc_path();
    funcs
        .iter()
        .map(|f| format!("uprobe:{libc}:{f} {{}} uretprobe:{libc}:{f} {{}} "))
        .collect()
}

pub fn run(bins: &Bins, n: u64, report: &mut Report) -> anyhow::Result<()> {
    let libc = libc_path();
    let fixture = format!("{} {n}", bins.path("dl-bench").display());
    let strings = format!(
        "uprobe:{libc}:dlopen {{ printf(\"dlopen %s %d\\n\", str(arg0), arg1); }} \
         uretprobe:{libc}:dlopen {{ printf(\"= %p\\n\", retval); }} \
         uprobe:{libc}:dlsym {{ printf(\"dlsym %p %s\\n\", arg0, str(arg1)); }} \
         uretprobe:{libc}:dlsym {{ printf(\"= %p\\n\", retval); }} \
         uprobe:{libc}:dlclose {{ printf(\"dlclose %p\\n\", arg0); }} \
         uretprobe:{libc}:dlclose {{ printf(\"= %d\\n\", retval); }}"
    );
    let untraced = ns_per_iter(&measure(bins.cmd("dl-bench").arg(n.to_string()))?)?;
    let floor = ns_per_iter(&measure(&mut bpftrace(
        &floor_program(&["dlopen", "dlsym", "dlclose"]),
        &fixture,
    ))?)?;
    let strings = ns_per_iter(&measure(&mut bpftrace(&strings, &fixture))?)?;
    let trace_file = std::env::temp_dir().join("vgpu-trace-bench.jsonl");
    let ours = measure(
        bins.tracer(&["run", "--format", "jsonl", "-o"])
            .arg(&trace_file)
            .arg("--")
            .arg(bins.path("dl-bench"))
            .arg(n.to_string()),
    )?;
    let ours = ns_per_iter(&ours)?;
    // Every call stops the tracee twice: fewer iterations for the same time.
    let ptrace_n = (n / 10).max(1000);
    let ptrace = ns_per_iter(&measure(
        bins.tracer(&["run", "--backend", "ptrace", "--format", "jsonl", "-o"])
            .arg(&trace_file)
            .arg("--")
            .arg(bins.path("dl-bench"))
            .arg(ptrace_n.to_string()),
    )?)?;
    let _ = std::fs::remove_file(&trace_file);
    let stops = ns_per_iter(&measure(
        bins.cmd("ptrace-floor").arg(ptrace_n.to_string()),
    )?)?;
    let ltrace_n = (n / 100).max(100);
    // -x: breakpoints on the functions themselves. -e hooks PLT slots, and Rust calls libc
    // through the GOT (no PLT), so it would see nothing.
    const LTRACE_X: &str = "dlopen@libc.so.6+dlsym@libc.so.6+dlclose@libc.so.6";
    let ltrace = ns_per_iter(&measure(
        Command::new("ltrace")
            .args(["-f", "-o", "/dev/null", "-x", LTRACE_X])
            .arg(bins.path("dl-bench"))
            .arg(ltrace_n.to_string()),
    )?)?;
    for (name, v, how) in [
        ("untraced", untraced, format!("dl-bench N (N = {n})")),
        (
            "bare uprobes (bpftrace, empty programs): the floor",
            floor,
            format!("bpftrace -e 'uprobe+uretprobe {{}} on each' -c 'dl-bench N' (N = {n})"),
        ),
        (
            "vgpu-trace, every event to JSONL",
            ours,
            format!("vgpu-trace run --format jsonl -o FILE -- dl-bench N (N = {n})"),
        ),
        (
            "bpftrace printing the strings",
            strings,
            format!("bpftrace printf of names and results (N = {n})"),
        ),
        (
            "vgpu-trace --backend ptrace, every event to JSONL",
            ptrace,
            format!(
                "vgpu-trace run --backend ptrace --format jsonl -o FILE -- dl-bench {ptrace_n}"
            ),
        ),
        (
            "ptrace's floor: the stops alone, no work",
            stops,
            format!("ptrace-floor {ptrace_n}"),
        ),
        (
            "ltrace",
            ltrace,
            format!("ltrace -x '{LTRACE_X}' dl-bench {ltrace_n}"),
        ),
    ] {
        report.add(
            "overhead: dlopen+dlsym+dlclose on a loaded library, per iteration",
            name,
            format!(
                "{:.2} µs  {:.1}× untraced  {:.2}× floor",
                v / 1000.0,
                v / untraced,
                v / floor
            ),
            v / floor,
            "× floor",
            None,
            how,
        );
    }
    report.add(
        "overhead: dlopen+dlsym+dlclose on a loaded library, per iteration",
        "ptrace backend against ltrace (same loop, both by breakpoints)",
        format!(
            "{:.2} µs against {:.2} µs: {:.1}× cheaper",
            ptrace / 1000.0,
            ltrace / 1000.0,
            ltrace / ptrace
        ),
        ltrace / ptrace,
        "× cheaper than ltrace",
        Some("≥ 4×"),
        "the ptrace and ltrace rows above",
    );
    report.add(
        "overhead: dlopen+dlsym+dlclose on a loaded library, per iteration",
        "ptrace backend against its floor (the stops alone)",
        format!(
            "{:.2} µs against {:.2} µs: {:.2}× the floor",
            ptrace / 1000.0,
            stops / 1000.0,
            ptrace / stops
        ),
        ptrace / stops,
        "× the stops alone",
        Some("≤ 1.5×"),
        "the ptrace rows above",
    );
    anyhow::ensure!(
        ltrace > 2.0 * untraced,
        "ltrace intercepted nothing ({ltrace:.0} ns per iteration): the baseline is void"
    );
    Ok(())
}
