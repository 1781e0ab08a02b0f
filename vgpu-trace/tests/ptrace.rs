//! The ptrace backend where BPF is refused (a user namespace): the same events as the eBPF
//! backend, through the same pipeline.
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::*;

/// `unshare -Ur vgpu-trace run --format jsonl -o FILE EXTRA -- CMD`: BPF is refused in the
/// user namespace, and the default backend (auto) falls back to ptrace and says why.
fn run_ptrace(tag: &str, extra: &[&str], cmd: &[String]) -> (Trace, Output) {
    let file = temp_file(tag);
    let out = Command::new("unshare")
        .arg("-Ur")
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["run", "--backend", "auto", "--format", "jsonl", "-o"])
        .arg(&*file)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("eBPF not loaded: EPERM in a user namespace; tracing with ptrace"),
        "{stderr}"
    );
    let trace = Trace::read(&file);
    assert_eq!(trace.of_type("header").next().unwrap()["backend"], "ptrace");
    (trace, out)
}

fn scenario() -> Vec<String> {
    vec![
        fixture("dl-fixture").display().to_string(),
        "scenario".into(),
    ]
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn in_a_user_namespace_ptrace_sees_processes_and_loads() {
    let _serial = serial();
    let (trace, out) = run_ptrace("ptrace-scenario", &[], &scenario());
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
    let (ptrace, out) = run_ptrace("ptrace-diff-ptrace", &[], &scenario());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(shape(&ebpf), shape(&ptrace));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn run_under_ptrace_passes_the_status_through_and_multithreaded_tracees_finish() {
    let _serial = serial();
    let (_, out) = run_ptrace(
        "ptrace-status",
        &[],
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
    let (trace, out) = run_ptrace("ptrace-threads", &[], &storm);
    assert!(out.status.success(), "{out:?}");
    // The tracee's own count is the ground truth: every call seen once, none twice.
    assert!(String::from_utf8_lossy(&out.stdout).contains("dlopen=800 dlsym=800 threads=16"));
    let calls = |func: &str, name: &str| {
        trace
            .of_type("call")
            .filter(|c| c["func"] == func && c["name"] == name && c["ok"] == true)
            .count()
    };
    assert_eq!(calls("dlopen", "libm.so.6"), 800);
    assert_eq!(calls("dlsym", "cos"), 800);
    let tids: std::collections::HashSet<_> = trace
        .of_type("call")
        .filter(|c| c["name"] == "cos")
        .map(|c| c["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(tids.len(), 16);
    let exits: Vec<&Value> = trace.of_type("exit").collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["code"], 0);
    trace.assert_nothing_lost();
}

/// The engine (the command's parent under ptrace) is spared by the OOM killer, whose SIGKILL
/// would leave the command with breakpoints; the command itself is not made unkillable.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn the_engine_is_spared_by_the_oom_killer_and_the_command_is_not() {
    let out = tracer()
        .args(["run", "--backend", "ptrace", "-o", "/dev/null", "--"])
        .args([
            "sh",
            "-c",
            "echo command=$(cat /proc/self/oom_score_adj) engine=$(cat /proc/$PPID/oom_score_adj)",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ours = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    // Lowering it needs CAP_SYS_RESOURCE, which some sandboxes withhold even from root.
    let may_lower = Command::new("sh")
        .args(["-c", "echo -1000 > /proc/self/oom_score_adj"])
        .status()
        .unwrap()
        .success();
    let engine = if may_lower { "-1000" } else { ours.trim() };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("command={} engine={engine}", ours.trim())
    );
}

#[test]
fn attach_all_under_ptrace_is_refused_and_says_why() {
    let out = tracer()
        .args(["attach", "--backend", "ptrace", "--all"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`attach --all` needs the eBPF backend"),
        "{stderr}"
    );
}

/// An 8-thread dlopen/dlsym storm is started, then attached to (`sh` starts both and execs
/// the tracer, so the tracer's pid is the child's); once the trace shows the storm's calls,
/// the tracer is sent `signal`. The storm must finish with its own count and status. Returns
/// the trace and the tracer's stderr.
fn attach_to_a_storm_then(
    signal: nix::sys::signal::Signal,
    user_namespace: bool,
) -> (tempfile::TempPath, String) {
    use std::io::Read as _;
    let _serial = serial();
    let file = temp_file("ptrace-attach");
    let storm_out = temp_file("ptrace-attach-storm");
    let script = format!(
        "({storm} threads 8 1000000 libm.so.6 cos; echo status=$?) > {out} 2>&1 & \
         sleep 0.2; exec {tracer} attach {backend} --format jsonl -o {file} $!",
        storm = fixture("storm").display(),
        out = storm_out.display(),
        tracer = env!("CARGO_BIN_EXE_vgpu-trace"),
        // In the user namespace BPF is refused and auto falls back.
        backend = if user_namespace {
            "--backend auto"
        } else {
            "--backend ptrace"
        },
        file = file.display(),
    );
    let mut command = if user_namespace {
        let mut c = Command::new("unshare");
        c.args(["-Ur", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let mut tracer = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until every worker has been seen calling (under ptrace each dlopen, dlsym and dlclose
    // stops twice, at entry and return).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while workers_seen(&file) < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every worker seen"
        );
        // A tracer that ended (the storm over before it attached) would leave nothing to see.
        assert!(
            tracer.try_wait().unwrap().is_none(),
            "the tracer ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tracer.id() as i32), signal).unwrap();
    let mut stderr = String::new();
    tracer
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    tracer.wait().unwrap();
    // A thread left stopped would never finish, one left with a breakpoint would die of
    // SIGTRAP, one left with a swapped return address of SIGSEGV.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&storm_out).is_ok_and(|t| t.contains("status=")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the storm did not finish: {stderr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&storm_out).unwrap(),
        "dlopen=8000000 dlsym=8000000 threads=8\nstatus=0\n",
        "{stderr}"
    );
    (file, stderr)
}

/// The threads seen calling dlsym(…, "cos") so far in a trace being written.
fn workers_seen(file: &std::path::Path) -> usize {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let tids: std::collections::HashSet<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "call" && e["name"] == "cos" && e["ok"] == true)
        .filter_map(|e| e["tid"].as_u64())
        .collect();
    tids.len()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn attach_in_a_user_namespace_falls_back_to_ptrace_and_detaches_on_ctrl_c() {
    let (file, stderr) = attach_to_a_storm_then(nix::sys::signal::Signal::SIGINT, true);
    assert!(
        stderr.contains("eBPF not loaded: EPERM in a user namespace; tracing with ptrace"),
        "{stderr}"
    );
    // The storm's 8 workers and main thread, and the subshell waiting for it.
    assert!(stderr.contains("detached from 10 threads"), "{stderr}");
    assert_eq!(workers_seen(&file), 8, "{stderr}");
    let trace = Trace::read(&file);
    assert_eq!(trace.of_type("header").next().unwrap()["backend"], "ptrace");
    assert_eq!(trace.of_type("header").next().unwrap()["mode"], "attach");
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_storm_outlives_an_attached_tracer_killed_mid_run() {
    attach_to_a_storm_then(nix::sys::signal::Signal::SIGKILL, false);
}

/// The tracer is sent `signal` in the middle of an 8-thread dlopen/dlsym storm, once it has
/// seen the storm's first calls; the storm must finish with its own count and status.
fn storm_outlives_a_tracer_sent(signal: nix::sys::signal::Signal) {
    use std::io::{BufRead as _, BufReader};
    let _serial = serial();
    let file = temp_file("ptrace-interrupted");
    let storm = fixture("storm");
    let script = format!(
        "{} threads 8 400 libm.so.6 cos; echo status=$?",
        storm.display()
    );
    let mut tracer = Command::new("unshare")
        .arg("-Ur")
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["run", "--backend", "ptrace", "--format", "jsonl", "-o"])
        .arg(&*file)
        .args(["--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // unshare execs the tracer: same pid. Signalled once the trace shows the storm's calls.
    let mut stderr = BufReader::new(tracer.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("tracing with ptrace"), "{line}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("\"cos\"")) {
        assert!(std::time::Instant::now() < deadline, "no dlsym seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(tracer.id() as i32), signal).unwrap();
    tracer.wait().unwrap();
    // The command's output ends when it does: a tracee left stopped would never finish, one
    // left with a breakpoint would die of SIGTRAP, one whose opens failed would not count.
    let out = Lines::of(tracer.stdout.take().unwrap()).to_end().unwrap();
    assert_eq!(out, ["dlopen=3200 dlsym=3200 threads=8", "status=0"]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_storm_outlives_a_tracer_interrupted_mid_run() {
    storm_outlives_a_tracer_sent(nix::sys::signal::Signal::SIGINT);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_storm_outlives_a_tracer_killed_mid_run() {
    storm_outlives_a_tracer_sent(nix::sys::signal::Signal::SIGKILL);
}

/// A forwarding shim built as a C compiler builds one (`cuInit` is a jump through a pointer
/// into the reference shim's `cuInit`: a tail call), dlopened, called and dlclosed 20 times,
/// so that each round maps it again: both backends see every call of both libraries.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn tail_calls_and_remapped_libraries_are_seen_alike_by_both_backends() {
    let _serial = serial();
    let dir = temp_dir("forwarding-shim");
    let shim = dir.path().join("libcuda.so.1");
    build_c_library("forwarding-shim.c", &shim, "libcuda.so.1");
    let mut shapes = Vec::new();
    for backend in ["ebpf", "ptrace"] {
        let file = temp_file(&format!("forwarding-{backend}"));
        let out = tracer()
            .args(["run", "--backend", backend, "--format", "jsonl", "-o"])
            .arg(&*file)
            .arg("--")
            .arg(fixture("storm"))
            .arg("reopen")
            .arg(&shim)
            .args(["cuInit", "20"])
            .env("VGPU_FORWARD_TO", fixture("libvgpu_cuda.so"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "calls=20 unmapped=20\n"
        );
        let trace = Trace::read(&file);
        let count = |ty: &str, key: &str, value: &str| {
            trace
                .of_type(ty)
                .filter(|e| e[key].as_str().is_some_and(|v| v.ends_with(value)))
                .count()
        };
        assert_eq!(count("load", "path", "/libcuda.so.1"), 20, "{backend}");
        // The forwarding shim's cuInit and the reference shim's, which it jumped into.
        assert_eq!(count("api", "function", "cuInit"), 40, "{backend}");
        trace.assert_nothing_lost();
        shapes.push(shape(&trace));
    }
    assert_eq!(shapes[0], shapes[1]);
}

/// A lab preset traced by one backend in a scratch dir: the trace, and its shape with the
/// scratch dir and the runners' ports (which differ from run to run) masked.
fn lab_preset(preset: &str, backend: &str) -> (Trace, Vec<String>) {
    let tag = format!("ptrace-lab-{preset}-{backend}");
    let scratch = temp_dir(&tag);
    let dir = scratch.path();
    let config = dir.join("etc/vgpu-trace/shims.toml");
    let cmd: Vec<String> = [
        fixture("vgpu-lab").to_str().unwrap(),
        "run",
        preset,
        "--era",
        "b",
        "--dir",
        dir.to_str().unwrap(),
        "--keep",
    ]
    .map(String::from)
    .to_vec();
    let extra = ["--shims-config", config.to_str().unwrap()];
    let (trace, out) = if backend == "ptrace" {
        run_ptrace(&tag, &extra, &cmd)
    } else {
        run_traced(&tag, &extra, &mut cmd.clone())
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    trace.assert_nothing_lost();
    let masked = lab_shape(&trace, dir);
    (trace, masked)
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn lab_presets_get_the_same_verdict_and_calls_under_both_backends() {
    let _serial = serial();
    for (preset, outcome) in [
        ("healthy", "shim-used"),
        ("shim-missing-symbols", "missing-symbols"),
    ] {
        let (ebpf, ebpf_shape) = lab_preset(preset, "ebpf");
        let (ptrace, ptrace_shape) = lab_preset(preset, "ptrace");
        for trace in [&ebpf, &ptrace] {
            assert_eq!(trace.summary()["verdict"]["outcome"], outcome, "{preset}");
        }
        assert_eq!(ebpf_shape, ptrace_shape, "{preset}");
    }
}

#[test]
fn without_root_run_and_attach_fall_back_to_ptrace_and_say_why() {
    let out = unprivileged(&["run", "-o", "/dev/null", "--", "sh", "-c", "exit 5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("eBPF not loaded: not root; tracing with ptrace"),
        "{stderr}"
    );
    // Falling back does not lend ptrace rights the user lacks: pid 1 is not theirs.
    let out = unprivileged(&["attach", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("tracing with ptrace") && stderr.contains("cannot attach to"),
        "{stderr}"
    );
}
