//! The weight of a session: how long arming takes, whether a session that follows another
//! waits for it, how soon probes are gone after the tracer exits, how soon `attach` follows its
//! target, and how long a process is held while a new CUDA library is armed.
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::proc::{Measured, measure, percentile, spread};
use super::{Bins, bpf, report::Report};

const GROUP: &str = "sessions";
const HOLDS: &str = "holds: a new CUDA library armed while its process waits";

fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One `vgpu-trace run -- clock-now`: ms from starting the tracer to the command's first act.
fn arm_once(bins: &Bins) -> anyhow::Result<(f64, Measured)> {
    let t0 = realtime_ns();
    let m = measure(
        bins.tracer(&["run", "-o", "/dev/null", "--"])
            .arg(bins.path("clock-now")),
    )?;
    let started: u128 = m.fact("realtime_ns")?;
    Ok((started.saturating_sub(t0) as f64 / 1e6, m))
}

/// A session with about 50 uprobes: the lab's healthy era-B discovery, traced.
fn lab_session(bins: &Bins) -> anyhow::Result<Measured> {
    measure(
        bins.tracer(&["run", "-o", "/dev/null", "--"])
            .arg(bins.path("vgpu-lab"))
            .args(["run", "healthy", "--era", "b"]),
    )
}

/// The fixture `name`, under `vgpu-trace run -o /dev/null` when `traced` (started once the
/// previous session's probes are gone).
fn fixture(bins: &Bins, traced: bool, name: &str) -> anyhow::Result<Command> {
    if !traced {
        return Ok(bins.cmd(name));
    }
    settle()?;
    let mut c = bins.tracer(&["run", "-o", "/dev/null", "--"]);
    c.arg(bins.path(name));
    Ok(c)
}

fn settle() -> anyhow::Result<()> {
    // Tracers before uprobe_multi links took about 0.1 s per uprobe to release them.
    bpf::wait_released(Duration::from_secs(300))
        .map(|_| ())
        .context("an earlier session's probes were not released within 300 s")
}

fn ms3((a, b, c): (f64, f64, f64)) -> String {
    format!("{a:.0} / {b:.0} / {c:.0} ms")
}

pub fn run(bins: &Bins, runs: usize, report: &mut Report) -> anyhow::Result<()> {
    settle()?;
    let mut arms = Vec::new();
    let mut first = None;
    for _ in 0..runs {
        settle()?;
        let (ms, _) = arm_once(bins)?;
        first.get_or_insert(ms);
        arms.push(ms);
    }
    report.add(
        GROUP,
        format!("arm: start of `run` to the command's exec (min/median/max of {runs})"),
        ms3(spread(arms.clone())),
        spread(arms).1,
        "ms",
        Some("≤ 50 ms"),
        "vgpu-trace run -o /dev/null -- clock-now, each after the previous session's probes \
         were gone; the command prints CLOCK_REALTIME as its first act",
    );

    let mut releases = Vec::new();
    let mut after = Vec::new();
    let mut waited = Vec::new();
    for _ in 0..runs {
        settle()?;
        lab_session(bins)?;
        releases.push(
            bpf::wait_released(Duration::from_secs(60))
                .map_or(f64::INFINITY, |d| d.as_secs_f64() * 1000.0),
        );
        lab_session(bins)?;
        let (ms, m) = arm_once(bins)?;
        after.push(ms);
        waited.push(m.waited_ms());
    }
    report.add(
        GROUP,
        "probes gone after a lab session's tracer exits (min/median/max)",
        ms3(spread(releases.clone())),
        spread(releases).2,
        "ms",
        Some("≤ 100 ms"),
        "vgpu-trace run -o /dev/null -- vgpu-lab run healthy --era b, then polling the kernel's \
         BPF programs until none of the tracer's is left",
    );
    report.add(
        GROUP,
        "arm right after a lab session (min/median/max)",
        format!(
            "{} (waited {:.0} ms median)",
            ms3(spread(after.clone())),
            spread(waited).1
        ),
        spread(after).1,
        "ms",
        Some("no wait"),
        "the lab session above, then at once vgpu-trace run -o /dev/null -- clock-now",
    );

    // Raw sys_enter/sys_exit programs run on every syscall of every process while a session
    // lasts (each returns after one comparison unless the syscall is one of six, of a followed
    // process): what that costs a process nobody traces.
    let syscall_ns = |during: bool| -> anyhow::Result<f64> {
        const N: u64 = 2_000_000;
        let mut session = None;
        if during {
            settle()?;
            let mut c = bins.tracer(&["run", "-o", "/dev/null", "--", "sleep", "60"]);
            let mut child = c.stderr(Stdio::piped()).spawn()?;
            let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
            lines.find(|l| l.as_ref().is_ok_and(|l| l.contains("armed in")));
            session = Some(child);
        }
        let m = measure(Command::new("dd").args([
            "if=/dev/zero",
            "of=/dev/null",
            "bs=1",
            &format!("count={N}"),
        ]));
        if let Some(mut child) = session {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
        // dd makes a read and a write per byte.
        Ok(m?.wall.as_nanos() as f64 / (2 * N) as f64)
    };
    let (mut quiet, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        quiet.push(syscall_ns(false)?);
        busy.push(syscall_ns(true)?);
    }
    let (q, b) = (spread(quiet).1, spread(busy).1);
    report.add(
        GROUP,
        "a syscall of an untraced process while a session runs (medians)",
        format!("+{:.0} ns ({b:.0} vs {q:.0} ns)", b - q),
        b - q,
        "ns",
        None,
        "dd if=/dev/zero of=/dev/null bs=1 count=2000000 (a read and a write per byte), alone and \
         while vgpu-trace run -- sleep 60 traces",
    );

    let mut follows = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..runs {
        settle()?;
        let (ms, calls) = attach_after_session(bins)?;
        follows.push(ms);
        seen.push(calls as f64);
    }
    report.add(
        GROUP,
        "attach PID right after a lab session: start to following",
        format!(
            "{} ({:.0} dl* calls seen, min)",
            ms3(spread(follows.clone())),
            spread(seen).0
        ),
        spread(follows).1,
        "ms",
        Some("≤ 100 ms"),
        "a lab session, then at once vgpu-trace attach PID of a waiting dl-fixture; time until \
         the tracer says it is following; then the fixture makes its dl* calls",
    );
    Ok(())
}

/// Starts a waiting fixture, runs a lab session, then attaches to the fixture at once.
/// Returns ms until the tracer follows and how many dl* calls of the fixture it saw.
fn attach_after_session(bins: &Bins) -> anyhow::Result<(f64, usize)> {
    let mut target = bins
        .cmd("dl-fixture")
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    lab_session(bins)?;
    let file = std::env::temp_dir().join("vgpu-trace-bench-attach.jsonl");
    let start = Instant::now();
    let mut tracer = bins
        .tracer(&["attach", "--format", "jsonl", "-o"])
        .arg(&file)
        .arg(target.id().to_string())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(tracer.stderr.take().expect("piped")).lines();
    let mut followed = None;
    for line in lines.by_ref() {
        if line?.contains("following") {
            followed = Some(start.elapsed());
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    target.stdin.take().expect("piped").write_all(b"go\n")?;
    target.wait()?;
    tracer.wait()?;
    let trace = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let calls = trace
        .lines()
        .filter(|l| l.contains(r#""type":"call""#))
        .count();
    let followed = followed.context("the tracer never said it was following")?;
    Ok((followed.as_secs_f64() * 1000.0, calls))
}

fn dlopen_ns(m: &Measured) -> anyhow::Result<Vec<f64>> {
    let v: String = m.fact("dlopen_ns")?;
    Ok(v.split(',').filter_map(|x| x.parse().ok()).collect())
}

pub fn holds(bins: &Bins, runs: usize, report: &mut Report) -> anyhow::Result<()> {
    const COPIES: usize = 20;
    let lib = bins.path("libvgpu_cuda.so");
    let dl_hold = |traced: bool, n: usize, gap_ms: u64| -> anyhow::Result<Vec<f64>> {
        let mut cmd = fixture(bins, traced, "dl-hold")?;
        let m = measure(cmd.arg(n.to_string()).arg(&lib).arg(gap_ms.to_string()))?;
        dlopen_ns(&m)
    };
    let mut plain = Vec::new();
    for _ in 0..runs {
        plain.extend(dl_hold(false, COPIES, 0)?);
    }
    let baseline = spread(plain).1;
    // Registering uprobes costs the kernel an RCU grace period when none was registered
    // lately: libraries armed back to back are quick, one after a quiet spell is not.
    for (gap_ms, when) in [(0, "back to back"), (100, "100 ms apart")] {
        let mut held = Vec::new();
        for _ in 0..runs {
            held.extend(
                dl_hold(true, COPIES, gap_ms)?
                    .into_iter()
                    .map(|d| (d - baseline) / 1e6),
            );
        }
        let count = held.len();
        report.add(
            HOLDS,
            format!("extra dlopen time of a new CUDA library, {when}: p50 / p99 / max of {count}"),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                percentile(held.clone(), 50.0),
                percentile(held.clone(), 99.0),
                percentile(held.clone(), 100.0)
            ),
            percentile(held, 99.0),
            "ms",
            Some("≤ 5 ms p99"),
            format!(
                "dl-hold {COPIES} libvgpu_cuda.so {gap_ms} (copies at new paths and inodes made \
                 after tracing began, each dlopened) under vgpu-trace run, minus the untraced \
                 median dlopen ({:.2} ms)",
                baseline / 1e6
            ),
        );
    }

    // A shim installed before tracing began, on the library path: armed at start, never held.
    let dir = std::env::temp_dir().join("vgpu-bench-shim");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&lib, dir.join("libcuda.so.1"))?;
    let mut extra = Vec::new();
    let mut held_runs = 0;
    for _ in 0..runs {
        let one = |traced: bool| -> anyhow::Result<(f64, bool)> {
            let mut cmd = fixture(bins, traced, "dl-hold")?;
            let m = measure(cmd.arg("0").arg(&lib).env("LD_LIBRARY_PATH", &dir))?;
            Ok((
                dlopen_ns(&m)?[0],
                m.stderr.contains("held traced processes"),
            ))
        };
        let (plain, _) = one(false)?;
        let (traced, held) = one(true)?;
        extra.push((traced - plain) / 1e6);
        held_runs += usize::from(held);
    }
    let _ = std::fs::remove_dir_all(&dir);
    report.add(
        HOLDS,
        "a shim on LD_LIBRARY_PATH before tracing began: runs held, extra dlopen time",
        format!(
            "{held_runs} of {runs} held; {:.2} ms median extra",
            spread(extra.clone()).1
        ),
        held_runs as f64,
        "runs",
        Some("no hold"),
        "dl-hold 0 (dlopen(\"libcuda.so.1\") through LD_LIBRARY_PATH=DIR holding a copy of the \
         shim), traced and untraced, paired",
    );

    let timed = |traced: bool| -> anyhow::Result<f64> {
        let mut cmd = fixture(bins, traced, "timed")?;
        cmd.arg(bins.path("vgpu-lab"))
            .args(["run", "healthy", "--era", "b"])
            .env_remove("LD_LIBRARY_PATH");
        Ok(measure(&mut cmd)?.fact::<f64>("wall_ns")? / 1e6)
    };
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(timed(false)?);
        traced.push(timed(true)?);
    }
    let (p, t) = (spread(plain).1, spread(traced).1);
    report.add(
        HOLDS,
        "lab healthy era-B discovery, traced / untraced (medians)",
        format!("{:.2} ({t:.0} vs {p:.0} ms)", t / p),
        t / p,
        "ratio",
        Some("≤ 1.10"),
        "timed vgpu-lab run healthy --era b, untraced and under vgpu-trace run -o /dev/null",
    );
    Ok(())
}
