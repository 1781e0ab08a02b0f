//! Per-iteration cost of dlopen+dlsym+dlclose on an already-loaded library, untraced and
//! under each tracer, all measured in the same run and reported as ratios.
use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{cargo, exec, is_root, target_dir, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Loop iterations per measurement (ltrace runs 1/100 of them: it is that slow).
    #[arg(long, default_value_t = 200_000)]
    iterations: u64,
}

/// Runs `cmd` and returns the fixture's `ns_per_iter=` figure, or the wall time per
/// iteration when the tracer swallows the fixture's output.
fn measure(cmd: &mut Command, iterations: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let wall = start.elapsed().as_nanos() as f64 / iterations as f64;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("ns_per_iter="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(wall))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

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
    ]))?;
    let bin = target_dir().join("release");
    let fixture = bin.join("dl-bench");
    let n = opts.iterations;
    let fixture_cmd = |iters: u64| {
        let mut c = Command::new(&fixture);
        c.arg(iters.to_string());
        c
    };
    let libc = libc_path();
    let funcs = ["dlopen", "dlsym", "dlclose"];
    let bare: String = funcs
        .iter()
        .map(|f| format!("uprobe:{libc}:{f} {{}} uretprobe:{libc}:{f} {{}} "))
        .collect();
    let strings = format!(
        "uprobe:{libc}:dlopen {{ printf(\"dlopen %s %d\\n\", str(arg0), arg1); }} \
         uretprobe:{libc}:dlopen {{ printf(\"= %p\\n\", retval); }} \
         uprobe:{libc}:dlsym {{ printf(\"dlsym %p %s\\n\", arg0, str(arg1)); }} \
         uretprobe:{libc}:dlsym {{ printf(\"= %p\\n\", retval); }} \
         uprobe:{libc}:dlclose {{ printf(\"dlclose %p\\n\", arg0); }} \
         uretprobe:{libc}:dlclose {{ printf(\"= %d\\n\", retval); }}"
    );
    let bpftrace = |program: &str| {
        let mut c = Command::new("bpftrace");
        c.args(["-q", "-o", "/dev/null", "-e", program, "-c"])
            .arg(format!("{} {n}", fixture.display()));
        c
    };
    let trace_file = std::env::temp_dir().join("vgpu-trace-bench.jsonl");
    let mut traced = Command::new(bin.join("vgpu-trace"));
    traced
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&trace_file)
        .arg("--")
        .arg(&fixture)
        .arg(n.to_string());

    let untraced = measure(&mut fixture_cmd(n), n)?;
    let floor = measure(&mut bpftrace(&bare), n)?;
    let bpftrace_strings = measure(&mut bpftrace(&strings), n)?;
    let ours = measure(&mut traced, n)?;
    let ltrace_n = (n / 100).max(100);
    let mut ltrace = Command::new("ltrace");
    ltrace
        .args(["-f", "-o", "/dev/null", "-e", "dlopen+dlsym+dlclose"])
        .arg(&fixture)
        .arg(ltrace_n.to_string());
    let ltrace = measure(&mut ltrace, ltrace_n)?;

    let trace = std::fs::read_to_string(&trace_file).context("reading the benchmark trace")?;
    let calls = trace
        .lines()
        .filter(|l| l.contains(r#""type":"call""#))
        .count();
    let summary = trace
        .lines()
        .rev()
        .find(|l| l.contains(r#""type":"summary""#))
        .unwrap_or("{}");
    let summary: serde_json::Value = serde_json::from_str(summary)?;
    let _ = std::fs::remove_file(&trace_file);

    println!("\nper iteration of dlopen+dlsym+dlclose on a loaded library ({n} iterations):");
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "", "µs/iter", "× untraced", "× floor"
    );
    for (name, v) in [
        ("untraced", untraced),
        ("bare uprobes (bpftrace, empty)", floor),
        ("vgpu-trace (all events to JSONL)", ours),
        ("bpftrace printing the strings", bpftrace_strings),
        ("ltrace", ltrace),
    ] {
        println!(
            "{name:<34} {:>10.2} {:>12.1} {:>12.2}",
            v / 1000.0,
            v / untraced,
            v / floor
        );
    }
    if ltrace < 2.0 * untraced {
        println!(
            "(ltrace intercepted nothing: it hooks PLT slots, and this binary binds them at start-up)"
        );
    }
    println!(
        "\nvgpu-trace delivered {calls} calls (expected {}), lost {}",
        3 * n,
        summary["lost"].as_u64().unwrap_or(u64::MAX)
    );
    Ok(())
}
