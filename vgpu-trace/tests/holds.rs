//! No traced process stays stopped: the kernel holds a process that maps a new CUDA library
//! until its probes are on, and the hold guard continues it whatever becomes of the tracer.
use std::{
    io::Write as _,
    process::{Child, ChildStdin, Stdio},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

mod common;
use common::*;

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

/// Waits until every thread of `pid` is stopped: SIGSTOP reaches a process's threads one by
/// one, and a tracer thread still running could arm the library and let the command go.
fn until_all_stopped(pid: u32) {
    let start = std::time::Instant::now();
    loop {
        let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        let state = |tid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            stat.rsplit_once(") ")?.1.chars().next()
        };
        if tids.iter().all(|&t| state(t) == Some('T')) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{pid} never stopped");
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

/// A traced command held inside its dlopen while the tracer is stopped: the tracer runs
/// `dl-hold 1 SHIM stdin` (under `subcommand`: run, record), which maps a library nobody has
/// seen when told to; the tracer is SIGSTOPped, the command told, and seen held.
struct Held {
    tracer: Child,
    command: u32,
    lines: Lines,
    _stdin: ChildStdin,
    /// The command's TMPDIR, where it copies the library: removed with the test, even when
    /// the test kills the command before it could clean up.
    _scratch: tempfile::TempDir,
}

fn held_while_the_tracer_is_stopped(subcommand: &[&str]) -> Held {
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
    let mut stdin = tracer.stdin.take().unwrap();
    let lines = Lines::of(tracer.stdout.take().unwrap());
    // Printed by the command, which only runs once the tracer is armed.
    lines.until("waiting");
    let command = traced_child(&tracer);
    signal(tracer.id(), Signal::SIGSTOP);
    until_all_stopped(tracer.id());
    writeln!(stdin, "go").unwrap();
    until_stopped(command);
    Held {
        tracer,
        command,
        lines,
        _stdin: stdin,
        _scratch: scratch,
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_process_held_when_the_tracer_is_stopped_then_killed_finishes() {
    let _serial = serial();
    let Held {
        mut tracer,
        command,
        lines,
        ..
    } = held_while_the_tracer_is_stopped(RUN);
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
    let Held {
        mut tracer, lines, ..
    } = held_while_the_tracer_is_stopped(RUN);
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
    // Held inside dlopen (the library is mapped, dlopen has not returned), and killed there.
    let Held {
        mut tracer,
        command,
        ..
    } = held_while_the_tracer_is_stopped(&["record", "-o", &file_arg]);
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
