//! A Go program, as Ollama is: dozens of runtime threads, goroutines that move between them,
//! signals of the runtime's own (SIGURG preemption), and dlopen through cgo. Built at test
//! time with Go (`cargo xtask test` installs it). Both backends count every call (or say how
//! many records were lost), and the program survives ptrace attaching, detaching and the
//! tracer's death.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Builds tests/data/gostorm into `dir`.
fn build(dir: &std::path::Path) -> PathBuf {
    let exe = dir.join("gostorm");
    let target = fixture("storm")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let out = Command::new("go")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gostorm"))
        .env("GOCACHE", target.join("go-cache"))
        .env("GOPATH", target.join("go-path"))
        .env("CGO_ENABLED", "1")
        .output()
        .expect("go: run through `cargo xtask test`, which installs it");
    assert!(out.status.success(), "{out:?}");
    exe
}

fn calls_printed(stdout: &str) -> usize {
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("calls="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout:?}"))
}

#[test]
#[ignore = "needs root, a BPF-capable kernel and Go (cargo xtask test runs it)"]
fn both_backends_count_every_dlsym_of_a_go_program() {
    let _serial = serial();
    let dir = temp_dir("go");
    let exe = build(dir.path());
    for backend in ["ebpf", "ptrace"] {
        let file = temp_file(&format!("go-{backend}"));
        let out = tracer()
            .args(["run", "--backend", backend, "--ring-size", "64M"])
            .args(["--format", "jsonl", "-o"])
            .arg(&*file)
            .arg("--")
            .arg(&exe)
            .args(["16", "1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {out:?}");
        let truth = calls_printed(&String::from_utf8_lossy(&out.stdout));
        let trace = Trace::read(&file);
        let seen = trace
            .of_type("call")
            .filter(|c| c["func"] == "dlsym" && c["name"] == "cos" && c["ok"] == true)
            .count();
        // Sixteen goroutines on a small machine can outrun the reader: losses are counted.
        exact_or_lost(backend, seen, truth as u64, &trace);
    }
}

/// ptrace attaches to the running Go program (every runtime thread), then lets go on Ctrl-C,
/// or dies; the program finishes with its own count and status.
#[test]
#[ignore = "needs root, a BPF-capable kernel and Go (cargo xtask test runs it)"]
fn a_go_program_outlives_ptrace_attaching_detaching_and_the_tracers_death() {
    let _serial = serial();
    let dir = temp_dir("go-attach");
    let exe = build(dir.path());
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let program = Command::new(&exe)
            .args(["32", "4"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let file = temp_file("go-attach");
        let mut tracer = tracer()
            .args(["attach", "--backend", "ptrace", "--format", "jsonl", "-o"])
            .arg(&*file)
            .arg(program.id().to_string())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(&file).map_or(0, |t| t.matches("\"cos\"").count()) < 200 {
            assert!(Instant::now() < deadline, "{signal}: no calls seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(tracer.id() as i32), signal).unwrap();
        tracer.wait().unwrap();
        let out = program.wait_with_output().unwrap();
        assert!(out.status.success(), "{signal}: {out:?}");
        assert!(calls_printed(&String::from_utf8_lossy(&out.stdout)) > 0);
    }
}
