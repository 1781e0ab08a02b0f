//! `watch` for weeks, compressed: 10,000 discovery passes under `vgpu-trace watch ollama`,
//! and what the daemon holds at pass 100, 1,000 and 10,000 (resident memory, fds, threads,
//! records kept) and how long a scrape of its metrics takes.
//!
//! Each pass is one `ollama gpu-discover` of the lab's stand-in (the shim loaded, cuInit,
//! NVML, the devices listed, exit): one process, so 10,000 fit in minutes. Every tenth runs
//! in a tree without the shim (`not-found`), so records are written and rotated all along.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Bins;
use super::proc::{spread, until_armed};
use super::report::Report;

const PASSES: u64 = 10_000;
const CHECKPOINTS: [u64; 3] = [100, 1_000, 10_000];
const KEEP: u64 = 50;

/// A lab tree built once, and the argv and environment of its gpu-discover.
struct Discover {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Discover {
    fn setup(bins: &Bins, preset: &str, dir: &Path) -> anyhow::Result<Self> {
        let root = dir.join(preset);
        let out = bins
            .cmd("vgpu-lab")
            .args(["setup", preset])
            .arg(&root)
            .args(["--era", "c"])
            .output()?;
        if !out.status.success() {
            bail!(
                "vgpu-lab setup {preset}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let r = root.display();
        let printed = String::from_utf8_lossy(&out.stdout);
        let shims = printed
            .lines()
            .find_map(|l| l.strip_prefix("LD_LIBRARY_PATH="))
            .unwrap_or_default();
        let lib = format!("{r}/usr/local/lib/ollama");
        Ok(Self {
            argv: vec![
                format!("{r}/usr/local/bin/ollama"),
                "gpu-discover".into(),
                "--lib-dir".into(),
                lib.clone(),
                "--lib-dir".into(),
                format!("{lib}/cuda_v12"),
            ],
            env: vec![
                ("VGPU_LAB_ROOT".into(), r.to_string()),
                (
                    "GGML_BACKEND_PATH".into(),
                    format!("{lib}/cuda_v12/libggml-cuda.so"),
                ),
                (
                    "LD_LIBRARY_PATH".into(),
                    format!("{lib}:{lib}/cuda_v12:{shims}"),
                ),
            ],
        })
    }

    fn run(&self) -> anyhow::Result<()> {
        Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok(())
    }
}

/// What the daemon holds at a checkpoint.
struct Held {
    rss_mb: f64,
    fds: usize,
    threads: usize,
    records: usize,
    scrape_ms: f64,
    /// `vgpu_trace_events_lost_total`: passes judged on lost events would not count.
    lost: u64,
}

fn held(pid: u32, records: &Path, metrics: SocketAddr) -> anyhow::Result<Held> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = |dir: String| std::fs::read_dir(dir).map_or(0, |d| d.count());
    let mut scrapes = Vec::new();
    let mut lost = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let text = scrape(metrics)?;
        scrapes.push(start.elapsed().as_secs_f64() * 1000.0);
        lost = text
            .lines()
            .find_map(|l| l.strip_prefix("vgpu_trace_events_lost_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
    }
    Ok(Held {
        rss_mb: kib("VmRSS:") / 1024.0,
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        records: std::fs::read_dir(records)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".vgt"))
            .count(),
        scrape_ms: spread(scrapes).1,
        lost,
    })
}

fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!("scrape: {}", response.lines().next().unwrap_or_default());
    }
    Ok(response)
}

/// The daemon under test, stopped (SIGTERM) however the soak ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// The watch's pass lines, counted as they come.
fn passes_seen(watch: &mut Child) -> mpsc::Receiver<String> {
    let out = BufReader::new(watch.stdout.take().expect("piped"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn run(bins: &Bins, report: &mut Report) -> anyhow::Result<()> {
    let dir = crate::target_dir().join("bench/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let healthy = Discover::setup(bins, "healthy", &dir)?;
    let off_path = Discover::setup(bins, "shim-off-path", &dir)?;
    let records: PathBuf = dir.join("records");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let watch = bins
        .tracer(&[
            "watch",
            "ollama",
            "--pass-gap",
            "2s",
            "--keep",
            &KEEP.to_string(),
        ])
        .arg("--records")
        .arg(&records)
        .arg("--metrics")
        .arg(metrics.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting vgpu-trace watch")?;
    let mut watch = Daemon(watch);
    until_armed(&mut watch.0, "vgpu-trace watch")?;
    let lines = passes_seen(&mut watch.0);
    let pid = watch.0.id();

    let mut seen = 0u64;
    let mut at = Vec::new();
    let started = Instant::now();
    for pass in 1..=PASSES {
        if pass % 10 == 0 {
            off_path.run()?;
        } else {
            healthy.run()?;
        }
        if CHECKPOINTS.contains(&pass) {
            // The daemon has judged every pass so far.
            while seen < pass {
                let line = lines.recv_timeout(Duration::from_secs(60)).map_err(|e| {
                    let counted = scrape(metrics)
                        .map(|text| {
                            text.lines()
                                .filter(|l| l.starts_with("vgpu_trace_passes_total"))
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_else(|e| format!("no scrape: {e}"));
                    anyhow::anyhow!(
                        "waiting for pass {pass}: {seen} seen ({e}); metrics: {counted}"
                    )
                })?;
                if line.starts_with("pass ") {
                    seen += 1;
                }
            }
            let h = held(pid, &records, metrics)?;
            eprintln!(
                "xtask bench: soak: pass {pass}: {:.1} MB, {} fds, {} threads, {} records, scrape {:.2} ms",
                h.rss_mb, h.fds, h.threads, h.records, h.scrape_ms
            );
            at.push((pass, h));
        }
        // Drain as we go: the channel holds no more than a checkpoint's lines.
        while let Ok(line) = lines.try_recv() {
            if line.starts_with("pass ") {
                seen += 1;
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    drop(watch);
    let _ = std::fs::remove_dir_all(&dir);

    let how = format!(
        "vgpu-trace watch ollama --keep {KEEP}; {PASSES} passes of the lab's `ollama gpu-discover` \
         (healthy, every tenth without the shim), one at a time; /proc/PID/status VmRSS, \
         /proc/PID/fd and /task, files in --records, median of 5 GETs of /metrics"
    );
    for (pass, h) in &at {
        report.add(
            "watch soak",
            format!("resident memory after {pass} passes"),
            format!(
                "{:.1} MB ({} fds, {} threads, {} records kept, {} events lost)",
                h.rss_mb, h.fds, h.threads, h.records, h.lost
            ),
            h.rss_mb,
            "MB",
            (*pass == PASSES).then_some("≤ 50 MB"),
            how.clone(),
        );
    }
    if let (Some((_, first)), Some((_, last))) = (at.first(), at.last()) {
        report.add(
            "watch soak",
            "growth from pass 100 to 10,000",
            format!(
                "{:+.1} MB, {:+} fds, {:+} threads",
                last.rss_mb - first.rss_mb,
                last.fds as i64 - first.fds as i64,
                last.threads as i64 - first.threads as i64
            ),
            last.rss_mb - first.rss_mb,
            "MB",
            Some("flat"),
            how.clone(),
        );
        report.add(
            "watch soak",
            "scrape of /metrics after 10,000 passes",
            format!("{:.2} ms", last.scrape_ms),
            last.scrape_ms,
            "ms",
            None,
            how.clone(),
        );
    }
    report.add(
        "watch soak",
        "passes judged a second",
        format!("{:.0} /s ({PASSES} in {took:.0} s)", PASSES as f64 / took),
        PASSES as f64 / took,
        "/s",
        None,
        how,
    );
    Ok(())
}
