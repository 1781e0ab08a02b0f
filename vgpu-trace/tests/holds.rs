//! No traced process stays stopped: the kernel holds a process that maps a new CUDA library
//! until its probes are on, and the hold guard continues it whatever becomes of the tracer.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Stdio},
    sync::mpsc,
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

mod common;
use common::*;

/// Longest a test waits for a process that should finish; past it, it fails (and continues
/// whatever it left stopped) instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

/// The lines written to a pipe the tracer shares with the command it runs, as they come,
/// ending when every process holding it (the tracer, the command, its children) is gone.
struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    fn of(pipe: impl std::io::Read + Send + 'static) -> Self {
        let out = BufReader::new(pipe);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// Waits for a line starting with `prefix`.
    fn until(&self, prefix: &str) -> String {
        loop {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?}: {e}"),
            }
        }
    }

    /// Waits for the end of the output: every writer has exited. Returns what came first.
    fn to_end(&self) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        loop {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(line) => seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(seen),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("still writing after {PATIENCE:?}: {seen:?}"));
                }
            }
        }
    }
}

fn signal(pid: u32, sig: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// /proc/PID/stat's state letter, or None once the process is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Waits until `pid` is stopped (the kernel held it).
fn until_stopped(pid: u32) {
    let start = std::time::Instant::now();
    while state(pid) != Some('T') {
        assert!(start.elapsed() < PATIENCE, "{pid} was never held");
        std::thread::yield_now();
    }
}

/// The command `run` started: the tracer's child that is not its hold guard.
fn traced_child(tracer: &Child) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", tracer.id())).unwrap();
    let comm = |pid: &u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .find(|pid| comm(pid).trim() == "dl-hold")
        .expect("the traced command")
}

const RUN: &[&str] = &["run", "--format", "jsonl", "-o", "/dev/null"];

/// `run -- dl-hold 1 SHIM stdin` (or another subcommand that runs a command): the traced
/// command maps a library nobody has seen, when told to (a line on its stdin).
/// Also returns the command's TMPDIR, where it copies the library: removed with it, even
/// when the test kills the command before it could clean up.
fn trace_late_library(subcommand: &[&str]) -> (Child, ChildStdin, Lines, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let mut tracer = tracer()
        .env("TMPDIR", scratch.path())
        .args(subcommand)
        .arg("--")
        .arg(fixture("dl-hold"))
        .arg("1")
        .arg(fixture("libvgpu_cuda.so"))
        .arg("stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = tracer.stdin.take().unwrap();
    let lines = Lines::of(tracer.stdout.take().unwrap());
    // Printed by the command, which only runs once the tracer is armed.
    lines.until("waiting");
    (tracer, stdin, lines, scratch)
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_process_held_when_the_tracer_is_stopped_then_killed_finishes() {
    let _serial = serial();
    let (mut tracer, mut stdin, lines, _scratch) = trace_late_library(RUN);
    let command = traced_child(&tracer);
    signal(tracer.id(), Signal::SIGSTOP);
    writeln!(stdin, "go").unwrap();
    until_stopped(command);
    signal(tracer.id(), Signal::SIGKILL);
    tracer.wait().unwrap();
    let end = lines.to_end();
    if end.is_err() {
        signal(command, Signal::SIGCONT);
    }
    let end = end.unwrap();
    assert!(end.iter().any(|l| l == "cuinit=0"), "{end:?}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_stopped_tracer_holds_nobody_past_the_limit() {
    let _serial = serial();
    let (mut tracer, mut stdin, lines, _scratch) = trace_late_library(RUN);
    let command = traced_child(&tracer);
    signal(tracer.id(), Signal::SIGSTOP);
    writeln!(stdin, "go").unwrap();
    until_stopped(command);
    // The tracer is still stopped: only the guard can continue the command.
    let done = lines.until("cuinit=");
    assert_eq!(done, "cuinit=0");
    signal(tracer.id(), Signal::SIGCONT);
    let status = wait_timeout(&mut tracer, PATIENCE);
    assert!(status.success(), "the tracer ended with {status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut tracer.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("first calls may go unseen"), "{stderr}");
    assert!(
        stderr.contains("the hold guard ended 1 hold(s) after 1 s"),
        "{stderr}"
    );
    assert!(!stderr.contains("held traced processes"), "{stderr}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_tracer_killed_at_any_point_of_a_lab_trace_leaves_every_process_to_finish() {
    let _serial = serial();
    // Spread over the session: loading, launching, arming, discovery, the end. A seed of
    // its own each run, printed so that a failure can be replayed.
    let seed = std::env::var("VGPU_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("VGPU_TEST_SEED={seed}");
    let mut rng = seed;
    for run in 0..20 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((rng >> 33) % 600_000);
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let mut tracer = tracer()
            .args([
                "run",
                "--format",
                "jsonl",
                "-o",
                "/dev/null",
                "--shims-config",
            ])
            .arg(dir.join("etc/vgpu-trace/shims.toml"))
            .arg("--")
            .arg(fixture("vgpu-lab"))
            .args(["run", "healthy", "--era", "b", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The lab and its Ollama stand-in log on stderr, like Ollama.
        let lines = Lines::of(tracer.stderr.take().unwrap());
        std::thread::sleep(delay); // the workload here is the random point, not a wait
        signal(tracer.id(), Signal::SIGKILL);
        tracer.wait().unwrap();
        let end = lines.to_end();
        let end = end.unwrap_or_else(|e| panic!("run {run}, killed after {delay:?}: {e}"));
        // Started by the tracer, the lab runs to its end (or never ran: the tracer died
        // before letting it exec).
        let started = end.iter().any(|l| l.starts_with("vgpu-lab: preset"));
        let finished = end.iter().any(|l| l.contains("inference compute"));
        assert!(
            !started || finished,
            "run {run}, killed after {delay:?}: {end:?}"
        );
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_process_killed_in_the_middle_of_a_dlopen() {
    let _serial = serial();
    let file = temp_file("killed-in-dlopen");
    let file_arg = file.display().to_string();
    let (mut tracer, mut stdin, _lines, _scratch) =
        trace_late_library(&["record", "-o", &file_arg]);
    let command = traced_child(&tracer);
    // Held inside dlopen (the library is mapped, dlopen has not returned), and killed there.
    signal(tracer.id(), Signal::SIGSTOP);
    writeln!(stdin, "go").unwrap();
    until_stopped(command);
    signal(command, Signal::SIGKILL);
    signal(tracer.id(), Signal::SIGCONT);
    let status = wait_timeout(&mut tracer, PATIENCE);
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "run gives the command's status"
    );
    let trace = vgpu_trace::testing::Trace::from_record(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(trace.complete);
    let open = trace
        .calls()
        .find(|c| {
            c.name
                .as_ref()
                .is_some_and(|n| n.value.ends_with("libcuda.so.1"))
        })
        .expect("the dlopen");
    assert_eq!(open.ok, None, "it never returned: {open:?}");
    let exit = trace
        .events
        .iter()
        .find_map(|e| match &e.kind {
            vgpu_trace::model::EventKind::Exit(x) if e.pid == command => Some(x),
            _ => None,
        })
        .expect("the exit");
    assert_eq!(exit.signal, Some(9));
}
