//! What must hold on every kernel, tried here with each way this kernel can attach uprobes
//! (`VGPU_TRACE_ATTACH`): every program verifies far inside the verifier's budget, each
//! attach method traces the same calls, the fall back says why in one line, a signal while
//! arming leaves a valid record, and perf-event uprobes are released off the session's path.
//! `cargo xtask test` runs the same checks on older kernels in QEMU.
use std::{
    os::fd::AsRawFd as _,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

const METHODS: [&str; 3] = [
    "uprobe-multi",
    "perf-event-cookie",
    "perf-event-per-function",
];

/// A tenth of the verifier's one-million-instruction budget.
const HEADROOM: u64 = 100_000;

fn doctor_kernel(method: &str) -> Value {
    let out = tracer()
        .env("VGPU_TRACE_ATTACH", method)
        .args(["doctor", "--kernel", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn every_program_verifies_far_inside_the_budget_with_every_attach_method() {
    let _serial = serial();
    for method in METHODS {
        let report = doctor_kernel(method);
        assert_eq!(report["backend"], "ebpf", "{method}: {report:#}");
        assert_eq!(report["method"], method);
        let programs = report["programs"].as_array().unwrap();
        // 5 tracepoints, 8 syscall programs, and the method's uprobe programs.
        let uprobes = if method == "perf-event-per-function" {
            33
        } else {
            4
        };
        assert_eq!(programs.len(), 13 + uprobes, "{method}: {report:#}");
        for p in programs {
            // This kernel (5.16+) counts for every program.
            let insns = p["verified_insns"]
                .as_u64()
                .unwrap_or_else(|| panic!("{method}: no count for {p}"));
            assert!(insns <= HEADROOM, "{method}: {p} is past {HEADROOM}");
        }
        assert!(report["not_loaded"].is_null(), "{method}: {report:#}");
    }
}

/// dl-fixture's scenario traced with the uprobes of `method`: the trace, what it printed.
fn scenario(method: &str) -> (Trace, std::process::Output) {
    let file = temp_file(&format!("attach-{method}"));
    let out = tracer()
        .env("VGPU_TRACE_ATTACH", method)
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&file)
        .arg("--")
        .arg(fixture("dl-fixture"))
        .arg("scenario")
        .output()
        .unwrap();
    assert!(out.status.success(), "{method}: {out:?}");
    let trace = Trace::read(&file);
    trace.assert_nothing_lost();
    (trace, out)
}

/// The `dl*` calls of dl-fixture's scenario, as (function, name, ok), in order.
fn scenario_calls(method: &str) -> Vec<(String, String, bool)> {
    let (trace, _) = scenario(method);
    assert_eq!(trace.of_type("header").next().unwrap()["backend"], "ebpf");
    trace
        .of_type("call")
        .map(|c| {
            (
                c["func"].as_str().unwrap_or("").to_string(),
                c["name"].as_str().unwrap_or("").to_string(),
                c["ok"] == true,
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn each_attach_method_traces_the_same_calls() {
    let _serial = serial();
    let multi = scenario_calls("uprobe-multi");
    assert!(
        multi
            .iter()
            .any(|(f, n, ok)| f == "dlopen" && n == "libm.so.6" && *ok),
        "{multi:?}"
    );
    assert!(
        multi.iter().any(|(f, _, ok)| f == "dlsym" && !*ok),
        "{multi:?}"
    );
    for method in &METHODS[1..] {
        let calls = scenario_calls(method);
        assert_eq!(calls, multi, "{method} against uprobe-multi");
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn auto_falls_back_in_one_line_when_the_verifier_is_past_its_deadline() {
    let _serial = serial();
    let file = temp_file("deadline");
    let out = tracer()
        .env("VGPU_TRACE_VERIFIER_DEADLINE_MS", "0")
        .args(["run", "--backend", "auto", "--format", "jsonl", "-o"])
        .arg(&file)
        .args(["--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    let fallback: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("eBPF not loaded"))
        .collect();
    assert_eq!(fallback.len(), 1, "{stderr}");
    assert!(
        fallback[0].starts_with("vgpu-trace: eBPF not loaded: the verifier ran past 0 ms on ")
            && fallback[0].ends_with("; tracing with ptrace"),
        "{stderr}"
    );
    let trace = Trace::read(&file);
    assert_eq!(trace.of_type("header").next().unwrap()["backend"], "ptrace");
    // --backend ebpf gives the verifier all the time it takes: no deadline, no fall back.
    let out = tracer()
        .env("VGPU_TRACE_VERIFIER_DEADLINE_MS", "0")
        .args(["run", "--backend", "ebpf", "-o", "/dev/null", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("armed in"),
        "{stderr}"
    );
}

/// The lock file a session holds while it attaches perf-event uprobes.
const LOCK_FILE: &str = "/run/vgpu-trace.lock";

/// Whether `pid` waits for the lock: in `flock` (x86_64 number 73) or asleep between two tries
/// (`nanosleep`, 35, or `clock_nanosleep`, 230, as the C library makes it).
fn waiting_for_the_lock(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| matches!(s.split_whitespace().next(), Some("73" | "35" | "230")))
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_signal_while_arming_ends_the_session_with_a_valid_record() {
    let _serial = serial();
    for (signal, name) in [
        (nix::sys::signal::Signal::SIGINT, "SIGINT"),
        (nix::sys::signal::Signal::SIGTERM, "SIGTERM"),
    ] {
        // Holding the attach lock keeps a perf-event session in arming for up to a second:
        // the signal comes while it arms.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap();
        // SAFETY: flock on a descriptor this File owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let file = temp_file("arming-signal");
        let mut child = tracer()
            .env("VGPU_TRACE_ATTACH", "perf-event-cookie")
            .args(["record", "-o"])
            .arg(&file)
            .args(["--", "sh", "-c", "echo never-ran"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = Instant::now();
        while !waiting_for_the_lock(pid) {
            assert!(started.elapsed() < PATIENCE, "the tracer never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        let status = wait_timeout(&mut child, PATIENCE);
        drop(lock);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        assert_eq!(status.code(), Some(128 + signal as i32), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "stopped by {name} while arming: nothing was traced"
            )),
            "{stderr}"
        );
        assert!(!stdout.contains("never-ran"), "the command ran: {stdout}");
        // The record is whole: its header, then its summary.
        let record = std::fs::read_to_string(&file).unwrap();
        let types: Vec<String> = record
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(types, ["\"header\"", "\"summary\""], "{record}");
        let replay = tracer().arg("replay").arg(&file).output().unwrap();
        assert!(replay.status.success(), "{replay:?}");
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn perf_event_probes_are_released_after_the_session_and_the_next_one_traces() {
    let _serial = serial();
    let before = links();
    let out = tracer()
        .env("VGPU_TRACE_ATTACH", "perf-event-cookie")
        .args(["run", "-o", "/dev/null", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The next session starts while the first one's probes are being released, and traces.
    let (trace, second) = scenario("perf-event-cookie");
    let f = facts(&second.stdout);
    trace.call(num(&f, "tid"), "dlopen", "libm.so.6");
    // Both sessions' probes go, by a releaser nobody waits for (perf-event links are BPF
    // links from 5.15, as cookies need them).
    let started = Instant::now();
    loop {
        let left: Vec<u32> = links().difference(&before).copied().collect();
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "links {left:?} left after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
