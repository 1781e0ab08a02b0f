//! The ptrace backend where BPF is refused (a user namespace): the same events as the eBPF
//! backend, through the same pipeline.
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::*;

/// `unshare -Ur vgpu-trace run --backend ptrace --format jsonl -o FILE -- CMD`.
fn run_ptrace(tag: &str, cmd: &[String]) -> (Trace, Output) {
    let file = temp_file(tag);
    let out = Command::new("unshare")
        .arg("-Ur")
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["run", "--backend", "ptrace", "--format", "jsonl", "-o"])
        .arg(&*file)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tracing with ptrace"), "{stderr}");
    (Trace::read(&file), out)
}

fn scenario() -> Vec<String> {
    vec![
        fixture("dl-fixture").display().to_string(),
        "scenario".into(),
    ]
}

/// What both backends must agree on: processes and the libraries they loaded, by name. Not
/// yet what caused a load: without the dl* calls, ptrace cannot tell a dlopen's load from
/// ld.so's own.
fn shape(trace: &Trace) -> Vec<String> {
    let mut shape: Vec<String> = trace
        .lines
        .iter()
        .filter_map(|e| {
            let comm = e["comm"].as_str().unwrap_or_default();
            match e["type"].as_str()? {
                "exec" => Some(format!("exec {comm} {}", e["argv"])),
                "spawn" => Some(format!("spawn by {comm}")),
                "exit" => Some(format!("exit {comm} {}", e["code"])),
                "load" => Some(format!("load {comm} {}", e["name"])),
                _ => None,
            }
        })
        .collect();
    shape.sort();
    shape
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn in_a_user_namespace_ptrace_sees_processes_and_loads() {
    let _serial = serial();
    let (trace, out) = run_ptrace("ptrace-scenario", &scenario());
    assert!(out.status.success(), "{out:?}");
    let header = trace.of_type("header").next().unwrap();
    assert_eq!(header["backend"], "ptrace");
    assert_eq!(
        trace.summary()["verdict"]["outcome"],
        "no-cuda",
        "{}",
        trace.summary()
    );
    let f = facts(&out.stdout);
    let child = num(&f, "child_pid");
    let exec = trace.of_type("exec").find(|e| e["pid"] == child).unwrap();
    assert_eq!(exec["argv"][1], "libresolv.so.2");
    let env = exec["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "OLLAMA_FIXTURE=1"), "{env:?}");
    assert!(!env.iter().any(|e| e.as_str().unwrap().contains("SECRET")));
    let exit = trace.of_type("exit").find(|e| e["pid"] == child).unwrap();
    assert_eq!(exit["code"], 3);
    assert!(trace.of_type("spawn").any(|s| s["child"] == child));
    let loaded = |pid: &Value, name: &str| {
        trace
            .of_type("load")
            .any(|l| &l["pid"] == pid && l["name"] == name)
    };
    let fixture_pid = &trace.of_type("exec").next().unwrap()["pid"];
    assert!(loaded(fixture_pid, "libm.so.6"));
    assert!(loaded(&exec["pid"], "libresolv.so.2"));
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn both_backends_see_the_same_processes_and_loads() {
    let _serial = serial();
    let (ebpf, out) = run_traced("ptrace-diff-ebpf", &[], &mut scenario());
    assert!(out.status.success(), "{out:?}");
    let (ptrace, out) = run_ptrace("ptrace-diff-ptrace", &scenario());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(shape(&ebpf), shape(&ptrace));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn run_under_ptrace_passes_the_status_through_and_multithreaded_tracees_finish() {
    let _serial = serial();
    let (_, out) = run_ptrace(
        "ptrace-status",
        &["sh".into(), "-c".into(), "exit 7".into()],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let storm = vec![
        fixture("storm").display().to_string(),
        "threads".into(),
        "16".into(),
        "50".into(),
        "libm.so.6".into(),
        "cos".into(),
    ];
    let (trace, out) = run_ptrace("ptrace-threads", &storm);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("dlopen=800 dlsym=800 threads=16"));
    let exits: Vec<&Value> = trace.of_type("exit").collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["code"], 0);
}

#[test]
fn attach_under_ptrace_is_not_there_yet_and_says_so() {
    let out = tracer()
        .args(["attach", "--backend", "ptrace", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ptrace backend traces `run` only"),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_tracer_killed_mid_run_leaves_the_command_to_finish() {
    use std::io::{BufRead as _, BufReader};
    let _serial = serial();
    let mut tracer = Command::new("unshare")
        .arg("-Ur")
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["run", "--backend", "ptrace", "-o", "/dev/null", "--"])
        .args([
            "sh",
            "-c",
            "for i in $(seq 300); do /bin/true; done; echo finished",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // unshare execs the tracer: same pid. Killed once it says it traces.
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("tracing with ptrace"), "{line}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tracer.wait().unwrap();
    // The command's output ends when it does: a tracee left stopped would never finish.
    let out = Lines::of(tracer.stdout.take().unwrap()).to_end().unwrap();
    assert_eq!(out, ["finished"]);
}
