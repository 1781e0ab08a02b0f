//! Running one measured command: wall time, the peak memory of the process itself (wait4),
//! and what it printed.
use std::collections::HashMap;
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Reads `tracer`'s stderr until it says it is armed (eBPF) or attached (ptrace), then
/// drains the rest in the background so that it never blocks on a full pipe. `what` names it
/// in the error if it ends first.
pub fn until_armed(tracer: &mut std::process::Child, what: &str) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut stderr = std::io::BufReader::new(tracer.stderr.take().context("stderr piped")?);
    let mut said = String::new();
    while !said.contains("armed in") && !said.contains("attached with ptrace") {
        if stderr.read_line(&mut said)? == 0 {
            bail!("{what} ended before it was armed: {said}");
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok(())
}

pub struct Measured {
    pub wall: Duration,
    /// Peak resident set of the command's own process, in KiB.
    pub max_rss_kb: u64,
    pub stdout: String,
    pub stderr: String,
}

impl Measured {
    /// `key=value` lines the command printed.
    pub fn facts(&self) -> HashMap<String, String> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    pub fn fact<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<T> {
        self.facts()
            .get(key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("the command printed no {key}=:\n{}", self.stdout))
    }

    /// The tracer's "armed in N ms".
    pub fn armed_ms(&self) -> Option<f64> {
        let rest = self.stderr.split("armed in ").nth(1)?;
        rest.split(" ms").next()?.trim().parse().ok()
    }

    /// The tracer's closing "E events, P processes, C calls, L lost": (events, lost).
    pub fn events_and_lost(&self) -> Option<(u64, u64)> {
        let line = self.stderr.lines().find(|l| l.contains(" events, "))?;
        let number_before = |word: &str| -> Option<u64> {
            let (head, _) = line.split_once(word)?;
            head.rsplit([' ', ':'])
                .find(|s| !s.is_empty())?
                .parse()
                .ok()
        };
        Some((number_before(" events")?, number_before(" lost")?))
    }

    /// The tracer's "waited S s for an earlier session's probes", in ms (0 when it did not wait).
    pub fn waited_ms(&self) -> f64 {
        self.stderr
            .split("waited ")
            .nth(1)
            .and_then(|r| r.split(" s ").next()?.trim().parse::<f64>().ok())
            .map_or(0.0, |s| s * 1000.0)
    }
}

/// Runs `cmd` to the end and measures it; fails when it fails.
pub fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    out.read_to_string(&mut stdout)?;
    let stderr = reader.join().unwrap_or_default();
    let (status, rusage) = wait4(child.id())?;
    let wall = start.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{cmd:?} failed (wait status {status:#x}):\n{stderr}");
    }
    Ok(Measured {
        wall,
        max_rss_kb: rusage.ru_maxrss as u64,
        stdout,
        stderr,
    })
}

fn wait4(pid: u32) -> anyhow::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut rusage) };
        if r == pid as i32 {
            return Ok((status, rusage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4({pid}): {e}");
        }
    }
}

/// Minimum, median and maximum of some figures.
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        n => (v[0], v[n / 2], v[n - 1]),
    }
}

/// The p-th percentile (0..=100), nearest rank.
pub fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
