//! What `attach` costs a process that makes system calls: a Python loop calling `os.stat`, and
//! a Go program (cgo-linked, as Ollama is) whose goroutines stat and park, each rate measured
//! alone, then with a tracer attached, then after the tracer let go, all in one process (the
//! same interpreter or runtime, the same caches), for each backend.
use std::io::{BufRead as _, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Bins;
use super::proc::{spread, until_armed};
use super::report::Report;

/// A Python loop that runs `body` (after `setup`) and prints its rounds a second every
/// quarter second, looking at the clock every `every` rounds, until killed.
fn python_loop(setup: &str, body: &str, every: u32) -> String {
    format!(
        "{setup}
import time
n, t0 = 0, time.monotonic()
while True:
    {body}
    n += 1
    if n % {every} == 0:
        t = time.monotonic()
        if t - t0 >= 0.25:
            print(int(n / (t - t0)), flush=True)
            n, t0 = 0, t
"
    )
}

/// Goroutines calling `os.Stat` and handing off to another goroutine every 64 calls (the
/// runtime's futexes and thread switches of a Go server); prints the calls a second every
/// quarter second, until killed.
const GO_LOOP: &str = r#"package main

// #include <unistd.h>
import "C"

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	_ = C.getpid()
	var n int64
	for i := 0; i < 4; i++ {
		go func() {
			ping := make(chan struct{})
			go func() {
				for range ping {
				}
			}()
			for {
				os.Stat("/")
				if atomic.AddInt64(&n, 1)%64 == 0 {
					ping <- struct{}{}
				}
			}
		}()
	}
	t0 := time.Now()
	for {
		time.Sleep(250 * time.Millisecond)
		t := time.Now()
		fmt.Println(int64(float64(atomic.SwapInt64(&n, 0)) / t.Sub(t0).Seconds()))
		t0 = t
	}
}
"#;

/// Builds [`GO_LOOP`] under the target dir; the path of the program.
fn build_go_loop() -> anyhow::Result<std::path::PathBuf> {
    let dir = crate::target_dir().join("bench/goloop");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("main.go"), GO_LOOP)?;
    std::fs::write(dir.join("go.mod"), "module goloop\n\ngo 1.19\n")?;
    let exe = dir.join("goloop");
    let out = Command::new("go")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(&dir)
        .env("GOCACHE", crate::target_dir().join("go-cache"))
        .env("GOPATH", crate::target_dir().join("go-path"))
        .env("CGO_ENABLED", "1")
        .output()
        .context("running go (cargo xtask test installs it)")?;
    if !out.status.success() {
        bail!("go build: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(exe)
}

/// Windows (a quarter second each) measured in each phase, after one let pass to settle.
const WINDOWS: usize = 12;

struct Looping {
    child: Child,
    rates: Lines<BufReader<ChildStdout>>,
}

impl Looping {
    fn start(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
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
    until_armed(&mut tracer, &format!("attach --backend {backend}"))?;
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
    let go = build_go_loop()?;
    let python = |script: &str| vec!["python3".to_string(), "-c".into(), script.into()];
    // (name, what it is, its argv, whether the ≥ 0.9× target holds for it under ptrace)
    let loops = [
        (
            "os.stat loop",
            "python3 os.stat('/') loop",
            python(&python_loop("import os", "os.stat('/')", 1000)),
            true,
        ),
        (
            "Go program",
            "Go program (cgo, 4 goroutines calling os.Stat and handing off every 64 calls)",
            vec![go.display().to_string()],
            true,
        ),
        (
            "dlopen+dlclose reload loop",
            "python3 loop of dlopen('libanl.so.1') and dlclose, mapped and unmapped each round \
             (the traced work itself: no target)",
            // Each round maps and unmaps it: under ptrace attach, two breakpoints per call and
            // four stops at ld.so's rendezvous, two of them reading its list.
            python(&python_loop(
                "import _ctypes",
                "_ctypes.dlclose(_ctypes.dlopen('libanl.so.1', 2))",
                100,
            )),
            false,
        ),
    ];
    for (name, what, argv, target) in loops {
        for backend in ["ebpf", "ptrace"] {
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]);
            let mut looping = Looping::start(command)?;
            let alone = looping.rate()?;
            let tracer = attach(bins, backend, looping.child.id())?;
            let attached = looping.rate()?;
            stop(tracer)?;
            let after = looping.rate()?;
            // Against the rates before and after, which bracket it: a busy machine drifts
            // by more than a light tracer costs.
            let ratio = attached / ((alone + after) / 2.0);
            report.add(
                "attach",
                format!("{name} attached ({backend}), against alone"),
                format!(
                    "{ratio:.3}× ({attached:.0} calls/s, against {alone:.0} before and {after:.0} \
                     after; {:.1} µs a call, against {:.1})",
                    1e6 / attached,
                    2e6 / (alone + after)
                ),
                ratio,
                "×",
                (target && backend == "ptrace").then_some("≥ 0.9×"),
                format!(
                    "{what}, median of {WINDOWS} quarter-second rates alone, then under \
                     `vgpu-trace attach --backend {backend} PID`, then after Ctrl-C, in one \
                     process; against the mean of before and after"
                ),
            );
        }
    }
    Ok(())
}
