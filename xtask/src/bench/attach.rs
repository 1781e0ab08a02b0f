//! What `attach` costs a process that makes system calls: a Python loop calling `os.stat`,
//! its rate measured alone, then with a tracer attached, then after the tracer let go, all in
//! one process (the same interpreter, the same caches), for each backend.
use std::io::{BufRead as _, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Bins;
use super::proc::spread;
use super::report::Report;

/// Prints its `os.stat` calls a second every quarter second, until killed.
const LOOP: &str = "\
import os, sys, time
n, t0 = 0, time.monotonic()
while True:
    os.stat('/')
    n += 1
    if n % 1000 == 0:
        t = time.monotonic()
        if t - t0 >= 0.25:
            print(int(n / (t - t0)), flush=True)
            n, t0 = 0, t
";

/// Windows (a quarter second each) measured in each phase, after one let pass to settle.
const WINDOWS: usize = 8;

struct Looping {
    child: Child,
    rates: Lines<BufReader<ChildStdout>>,
}

impl Looping {
    fn start() -> anyhow::Result<Self> {
        let mut child = Command::new("python3")
            .args(["-c", LOOP])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting python3")?;
        let rates = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Self { child, rates })
    }

    /// The median of the next `WINDOWS` rates, one skipped first.
    fn rate(&mut self) -> anyhow::Result<f64> {
        let mut v = Vec::new();
        for i in 0..=WINDOWS {
            let line = self.rates.next().context("the loop ended")??;
            if i > 0 {
                v.push(line.trim().parse::<f64>()?);
            }
        }
        Ok(spread(v).1)
    }
}

impl Drop for Looping {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vgpu-trace attach --backend B PID`, once it says it follows the process.
fn attach(bins: &Bins, backend: &str, pid: u32) -> anyhow::Result<Child> {
    let mut tracer = bins
        .tracer(&[
            "attach",
            "--backend",
            backend,
            "--format",
            "jsonl",
            "-o",
            "/dev/null",
        ])
        .arg(pid.to_string())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(tracer.stderr.take().expect("piped"));
    let mut said = String::new();
    while !said.contains("armed in") && !said.contains("attached with ptrace") {
        if stderr.read_line(&mut said)? == 0 {
            bail!("attach --backend {backend} ended first: {said}");
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok(tracer)
}

fn stop(mut tracer: Child) -> anyhow::Result<()> {
    // SAFETY: a signal to our own child, not yet reaped.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tracer.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = tracer.kill();
            bail!("the tracer did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub fn run(bins: &Bins, report: &mut Report) -> anyhow::Result<()> {
    for backend in ["ebpf", "ptrace"] {
        let mut looping = Looping::start()?;
        let alone = looping.rate()?;
        let tracer = attach(bins, backend, looping.child.id())?;
        let attached = looping.rate()?;
        stop(tracer)?;
        let after = looping.rate()?;
        let ratio = attached / alone;
        report.add(
            "attach",
            format!("os.stat loop attached ({backend}), against alone"),
            format!(
                "{ratio:.3}× ({attached:.0} against {alone:.0} calls/s; {after:.0} after the tracer let go)"
            ),
            ratio,
            "×",
            (backend == "ptrace").then_some("≥ 0.9×"),
            format!(
                "python3 os.stat('/') loop, median of {WINDOWS} quarter-second rates alone, then under \
                 `vgpu-trace attach --backend {backend} PID`, then after Ctrl-C, in one process"
            ),
        );
    }
    Ok(())
}
