//! End-to-end tests: the real binary loads its programs into this kernel and traces real
//! processes. They need root and are `#[ignore]`d otherwise; `cargo xtask test` runs them.
use std::{
    collections::HashMap,
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;
use common::*;

/// Checks everything `dl-fixture scenario` does, against what it printed.
fn check_scenario(trace: &Trace, f: &HashMap<String, String>, fixture_pid: u64) {
    for prefix in ["", "thread_"] {
        let tid = num(f, &format!("{prefix}tid"));
        let open = trace.call(tid, "dlopen", "libm.so.6");
        assert_eq!(open["pid"], fixture_pid);
        assert_eq!(open["ret"], hex(f, &format!("{prefix}handle")));
        assert_eq!(open["ok"], true);
        assert_eq!(open["mode"], 2);
        let missing = trace.call(tid, "dlopen", "libvgpu-fixture-missing.so.1");
        assert_eq!(missing["ret"], 0);
        assert_eq!(missing["ok"], false);
        assert_eq!(missing["mode"], 1);
        assert_eq!(
            missing["error"],
            f[&format!("{prefix}missing_error")].as_str()
        );
        let cos = trace.call(tid, "dlsym", "cos");
        assert_eq!(cos["ret"], hex(f, &format!("{prefix}cos")));
        assert_eq!(cos["handle"], hex(f, &format!("{prefix}handle")));
        let nosym = trace.call(tid, "dlsym", "vgpu_fixture_no_such_symbol");
        assert_eq!(nosym["ok"], false);
        assert_eq!(nosym["error"], f[&format!("{prefix}nosym_error")].as_str());
    }
    assert_ne!(num(f, "tid"), num(f, "thread_tid"));

    let child = num(f, "child_pid");
    let spawn = trace
        .of_type("spawn")
        .find(|s| s["child"] == child)
        .expect("spawn of dl-child");
    assert_eq!(spawn["pid"], fixture_pid);
    let exec = trace
        .of_type("exec")
        .find(|e| e["pid"] == child)
        .expect("exec of dl-child");
    assert_eq!(exec["ppid"], fixture_pid);
    assert_eq!(exec["comm"], "dl-child");
    assert_eq!(
        exec["depth"].as_u64().unwrap(),
        spawn["depth"].as_u64().unwrap() + 1
    );
    let argv: Vec<&str> = exec["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(argv[0].ends_with("dl-child"), "{argv:?}");
    assert_eq!(&argv[1..], ["libresolv.so.2", "--exit", "3"]);
    let env: Vec<&str> = exec["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(env.contains(&"OLLAMA_FIXTURE=1"), "{env:?}");
    assert!(
        env.contains(&"LD_LIBRARY_PATH=/nonexistent/vgpu-fixture"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|e| e.contains("SECRET")),
        "a variable outside the allowlist was captured: {env:?}"
    );
    let open = trace.call(child, "dlopen", "libresolv.so.2");
    assert_eq!(open["ret"], hex(f, "child_handle"));
    assert_eq!(open["mode"], 1);
    let exit = trace
        .of_type("exit")
        .find(|e| e["pid"] == child)
        .expect("exit of dl-child");
    assert_eq!(exit["code"], 3);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn run_sees_every_call_thread_and_child() {
    let _serial = serial();
    let (trace, out) = run_traced(
        "scenario",
        &[],
        &mut vec![
            fixture("dl-fixture").display().to_string(),
            "scenario".into(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let header = &trace.lines[0];
    assert_eq!(header["type"], "header");
    assert_eq!(header["format_version"], 1);
    assert_eq!(header["backend"], "ebpf");
    assert_eq!(header["mode"], "run");
    assert!(!header["kernel"].as_str().unwrap().is_empty());
    let exec = trace
        .of_type("exec")
        .find(|e| e["comm"] == "dl-fixture")
        .expect("exec of dl-fixture");
    let pid = exec["pid"].as_u64().unwrap();
    assert_eq!(exec["argv"][1], "scenario");
    check_scenario(&trace, &facts(&out.stdout), pid);
    let exit = trace
        .of_type("exit")
        .find(|e| e["pid"] == pid)
        .expect("exit of dl-fixture");
    assert_eq!(exit["code"], 0);
    trace.assert_nothing_lost();
    let _ = ROOT;
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn run_passes_the_exit_status_through() {
    let _serial = serial();
    let file = temp_file("status");
    let status = tracer()
        .args(["run", "-o"])
        .arg(&file)
        .arg("--")
        .arg(fixture("dl-child"))
        .args(["libm.so.6", "--exit", "7"])
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(status.code(), Some(7));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn attach_sees_later_calls_and_children() {
    attach_sees_later_calls_and_children_with("ebpf");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn attach_under_ptrace_sees_later_calls_and_children() {
    attach_sees_later_calls_and_children_with("ptrace");
}

fn attach_sees_later_calls_and_children_with(backend: &str) {
    let _serial = serial();
    let mut target = Command::new(fixture("dl-fixture"))
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = target.id() as u64;
    let file = temp_file("attach");
    let mut tracer = tracer()
        .args(["attach", "--backend", backend, "--format", "jsonl", "-o"])
        .arg(&file)
        .arg(pid.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, _stderr) = until_armed(&mut tracer);
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = target.wait_with_output().unwrap();
    assert!(out.status.success());
    // The tracer ends by itself once every followed process has exited.
    let status = wait_timeout(&mut tracer, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let trace = Trace::read(&file);
    assert_eq!(trace.lines[0]["mode"], "attach");
    let attached = trace
        .of_type("attached")
        .find(|a| a["pid"] == pid)
        .expect("attached event");
    assert_eq!(attached["argv"][1], "wait");
    check_scenario(&trace, &facts(&out.stdout), pid);
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn short_lived_killed_child_is_fully_seen() {
    let _serial = serial();
    let (trace, out) = run_traced(
        "short",
        &[],
        &mut vec![
            fixture("dl-fixture").display().to_string(),
            "short-child".into(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let f = facts(&out.stdout);
    let child = num(&f, "child_pid");
    let exec = trace
        .of_type("exec")
        .find(|e| e["pid"] == child)
        .expect("exec of dl-child");
    assert_eq!(exec["argv"][1], "libresolv.so.2");
    assert_eq!(exec["argv"][2], "--sleep-ms");
    assert!(
        exec["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "OLLAMA_FIXTURE=1")
    );
    let open = trace.call(child, "dlopen", "libresolv.so.2");
    assert_eq!(open["ok"], true);
    let exit = trace
        .of_type("exit")
        .find(|e| e["pid"] == child)
        .expect("exit");
    // Killed (not the end of its 10 s sleep), after its dlopen had returned.
    assert_eq!(exit["signal"], 9, "{exit}");
    assert!(exit["ts_ns"].as_u64().unwrap() > open["ts_ns"].as_u64().unwrap());
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn python_ctypes_loads_are_seen_with_results() {
    let _serial = serial();
    let script = "import ctypes\nctypes.CDLL('libm.so.6')\ntry:\n    ctypes.CDLL('libvgpu-py-missing.so')\nexcept OSError as e:\n    print('error=' + str(e))\n";
    let (trace, out) = run_traced(
        "python",
        &[],
        &mut vec!["python3".into(), "-c".into(), script.into()],
    );
    assert!(out.status.success(), "{out:?}");
    let calls: Vec<&Value> = trace
        .of_type("call")
        .filter(|c| c["func"] == "dlopen")
        .collect();
    let libm = calls
        .iter()
        .find(|c| c["name"] == "libm.so.6")
        .expect("dlopen libm.so.6");
    assert_eq!(libm["ok"], true);
    assert_ne!(libm["ret"], 0);
    let missing = calls
        .iter()
        .find(|c| c["name"] == "libvgpu-py-missing.so")
        .expect("dlopen of the missing library");
    assert_eq!(missing["ok"], false);
    let error = missing["error"].as_str().unwrap();
    assert!(error.contains("cannot open shared object file"), "{error}");
    assert_eq!(
        facts(&out.stdout)["error"],
        error,
        "the dlerror text is what Python reported"
    );
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_full_ring_buffer_is_counted_and_shown() {
    let _serial = serial();
    let out = tracer()
        .args(["run", "--ring-size", "4096", "--color", "never", "--"])
        .arg(fixture("dl-fixture"))
        .args(["flood", "200000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("events lost (ring buffer full"),
        "no loss line in the timeline"
    );
    let lost: u64 = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("vgpu-trace: ")
                .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" lost")))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert!(lost > 0, "{stderr}");
    assert!(stderr.contains("warning"), "{stderr}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn bad_targets_fail_clearly() {
    let _serial = serial();
    let out = tracer().args(["attach", "999999999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process with pid 999999999"));
    let out = tracer()
        .args(["attach", "vgpu-no-such-process"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running process named"));
    let out = tracer()
        .args(["run", "--", "/nonexistent/vgpu-cmd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run"),
        "{out:?}"
    );
    // Without privileges: a clear message naming what is missing, not a panic.
    if let Ok(out) = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["run", "--backend", "ebpf", "--", "true"])
        .output()
    {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("needs root") && stderr.contains("CAP_BPF"),
            "{stderr}"
        );
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn back_to_back_sessions_neither_wait_nor_leave_probes() {
    let _serial = serial();
    let before = links();
    // The first arms a CUDA library copy (more probes to release), the second starts at once.
    let lib = fixture("libvgpu_cuda.so");
    let first = tracer()
        .args(["run", "-o", "/dev/null", "--"])
        .arg(fixture("dl-hold"))
        .arg("2")
        .arg(&lib)
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(links(), before, "the first session's probes outlived it");
    let mut cmd = vec![
        fixture("dl-fixture").display().to_string(),
        "scenario".to_string(),
    ];
    let (trace, out) = run_traced("back-to-back", &[], &mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("waited"), "{stderr}");
    let pid = trace
        .of_type("exec")
        .find(|e| e["comm"] == "dl-fixture")
        .expect("exec of dl-fixture")["pid"]
        .as_u64()
        .unwrap();
    check_scenario(&trace, &facts(&out.stdout), pid);
    trace.assert_nothing_lost();
    assert_eq!(links(), before);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_library_unknown_at_start_is_armed_before_its_first_call() {
    let _serial = serial();
    // Copies at new paths and inodes: nothing about them was known when tracing began.
    let mut cmd = vec![
        fixture("dl-hold").display().to_string(),
        "3".to_string(),
        fixture("libvgpu_cuda.so").display().to_string(),
    ];
    let (trace, out) = run_traced("unknown-library", &[], &mut cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(facts(&out.stdout)["cuinit"], "0,0,0");
    let inits: Vec<&Value> = trace
        .of_type("api")
        .filter(|a| a["function"] == "cuInit")
        .collect();
    assert_eq!(inits.len(), 3, "each copy's first call: {inits:?}");
    assert!(inits.iter().all(|a| a["result"] == "CUDA_SUCCESS"));
    let loads = trace
        .of_type("load")
        .filter(|l| l["name"] == "libcuda.so.1")
        .count();
    assert_eq!(loads, 3);
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn library_named_fifos_and_devices_do_not_stop_the_trace() {
    let _serial = serial();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("hostile");
    let file = temp_file("hostile");
    let mut child = tracer()
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&file)
        .arg("--")
        .arg(fixture("dl-fixture"))
        .arg("hostile")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A tracer that read the FIFO would never end (it ignored SIGTERM, too).
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "tracer exited with {status}");
    assert!(stdout.contains("done=1"), "{stdout}");
    // Whole: its summary is there, the failed dlopens of /dev/zero and 900 MB of zeros
    // (read by ld.so, not by the tracer), and the fixture's exit.
    let trace = Trace::read(&file);
    let failed: Vec<&Value> = trace
        .of_type("call")
        .filter(|c| c["func"] == "dlopen" && c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(
        failed.iter().all(|c| c["error"].as_str().is_some()),
        "{failed:?}"
    );
    assert!(trace.summary()["events"].as_u64().unwrap() > 0);
    assert!(
        trace
            .of_type("exit")
            .any(|e| e["comm"] == "dl-fixture" && e["code"] == 0)
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_million_event_burst_is_whole_or_its_losses_are_counted_exactly() {
    let _serial = serial();
    // dl-bench without dlclose: four records an iteration, 250k iterations.
    let burst = |ring: &str| -> (u64, u64) {
        let file = temp_file(&format!("burst-{ring}"));
        let out = tracer()
            .args(["run", "--ring-size", ring, "--format", "jsonl", "-o"])
            .arg(&file)
            .arg("--")
            .arg(fixture("dl-bench"))
            .args(["250000", "--no-dlclose"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let trace = Trace::read(&file);
        let summary = trace.summary();
        let lost = summary["lost"].as_u64().unwrap();
        let shown: u64 = trace
            .of_type("lost")
            .map(|l| l["count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            shown, lost,
            "the timeline's loss lines add up to the summary's"
        );
        (summary["events"].as_u64().unwrap(), lost)
    };
    // The same program, traced twice: what arrived plus what was lost is what was sent, both
    // with the default ring and with one too small to keep up.
    let (events, lost) = burst("8M");
    let (small_events, small_lost) = burst("64K");
    assert!(small_lost > 0, "a 64 KiB ring should overflow");
    assert!(events + lost >= 1_000_000, "{events} + {lost}");
    assert_eq!(events + lost, small_events + small_lost);
}

/// What the command writes to stdout and stderr is kept as `log` lines, from its `write` calls
/// (so its output still goes where it went), by either backend; Ollama's conclusion in it is
/// recognised and reaches the verdict.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn what_the_command_writes_is_kept_as_log_lines_and_still_reaches_its_output() {
    let _serial = serial();
    let script = r#"
import sys
print("out line", flush=True)
sys.stderr.write('time=x level=INFO source=types.go:60 msg="inference compute" id=cpu library=cpu\n')
sys.stderr.flush()
sys.stdout.write("x" * 5000 + "\n")
sys.stdout.flush()
sys.stdout.write("no newline")
"#;
    for backend in ["ebpf", "ptrace"] {
        let file = temp_file(&format!("log-{backend}"));
        let out = tracer()
            .args(["run", "--backend", backend, "--format", "jsonl", "-o"])
            .arg(&file)
            .args(["--", "python3", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("out line\nxxx") && stdout.ends_with("x\nno newline"));
        let trace = Trace::read(&file);
        // `python3` may be a launcher script whose command substitutions write too.
        let logs: Vec<&serde_json::Value> = trace
            .of_type("log")
            .filter(|l| l["comm"].as_str().unwrap().starts_with("python"))
            .collect();
        let streams: Vec<&str> = logs.iter().map(|l| l["stream"].as_str().unwrap()).collect();
        assert_eq!(
            streams,
            ["stdout", "stderr", "stdout", "stdout"],
            "{backend}"
        );
        assert_eq!(logs[0]["text"], "out line", "{backend}");
        assert_eq!(logs[1]["ollama"]["says"], "inference-compute", "{backend}");
        assert_eq!(logs[1]["ollama"]["library"], "cpu", "{backend}");
        // A write is kept up to 4 KiB, and says so.
        assert_eq!(
            logs[2]["text"]["value"].as_str().unwrap().len(),
            4096,
            "{backend}"
        );
        assert_eq!(logs[2]["text"]["truncated"], true, "{backend}");
        assert_eq!(logs[3]["text"], "no newline", "{backend}");
        let verdict = &trace.summary()["verdict"];
        assert_eq!(verdict["outcome"], "no-cuda", "{backend}");
        assert!(
            verdict["text"]
                .as_str()
                .unwrap()
                .ends_with("; Ollama reported library=cpu"),
            "{backend}: {verdict}"
        );
        trace.assert_nothing_lost();
    }
}

/// The reference shim in pass-through mode loads NVIDIA's driver itself: that load reads as
/// the shim forwarding to it, not as the driver taking the shim's place.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_shims_own_load_of_the_driver_reads_as_forwarding() {
    let _serial = serial();
    let dir = temp_dir("forwarding-driver");
    // Named as NVIDIA names its driver; it answers cuInit itself (not initialised).
    let driver = dir.path().join("libcuda.so.570.133.07");
    build_c_library("forwarding-shim.c", &driver, "libcuda.so.1");
    let shim = fixture("libvgpu_cuda.so");
    let file = temp_file("forwarding-driver");
    let out = tracer()
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&*file)
        .arg("--shim")
        .arg(format!("cuda={}", shim.display()))
        .arg("--")
        .arg(fixture("storm"))
        .arg("reopen")
        .arg(&shim)
        .args(["cuInit", "1"])
        .env("VGPU_CUDA_PASSTHROUGH", &driver)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let trace = Trace::read(&file);
    let load = trace
        .of_type("load")
        .find(|l| l["name"] == "libcuda.so.570.133.07")
        .expect("the driver's load");
    assert_eq!(load["class"], "nvidia-driver");
    assert_eq!(load["forwarded_by"], shim.display().to_string());
    assert!(load["warning"].is_null(), "{load}");
    let verdict = trace.summary()["verdict"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(verdict.contains("(forwarding to "), "{verdict}");
}

/// `attach --cgroup` follows the processes in the cgroup, and one that starts in it later (a
/// service restarted), from its exec.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn attach_to_a_cgroup_follows_a_process_that_starts_in_it_later() {
    let _serial = serial();
    let cgroup = ScratchCgroup::new("attach");
    let mut first = cgroup
        .start(&format!("{} wait", fixture("dl-fixture").display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Until it is in the cgroup.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(cgroup.dir.join("cgroup.procs"))
        .unwrap()
        .contains(&first.id().to_string())
    {
        assert!(Instant::now() < deadline, "not in the cgroup");
        std::thread::sleep(Duration::from_millis(5));
    }
    let file = temp_file("attach-cgroup");
    let mut tracer = tracer()
        .args([
            "attach",
            "--cgroup",
            &cgroup.path,
            "--format",
            "jsonl",
            "-o",
        ])
        .arg(&*file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (said, _stderr) = until_armed(&mut tracer);
    assert!(said.contains("of cgroup"), "{said}");
    // The "restart": a new process, not a child of any followed one.
    let second = cgroup
        .start(&format!("{} open libm.so.6 3", fixture("storm").display()))
        .status()
        .unwrap();
    assert_eq!(second.code(), Some(3));
    first.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(first.wait_with_output().unwrap().status.success());
    // It follows the cgroup until told to stop.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
    let trace = Trace::read(&file);
    assert_eq!(trace.lines[0]["target"][0], "--cgroup");
    assert!(trace.of_type("attached").count() >= 1);
    let exec = trace
        .of_type("exec")
        .find(|e| e["argv"][1] == "open")
        .expect("the later process's exec");
    let pid = exec["pid"].clone();
    let opened = trace
        .of_type("call")
        .find(|c| c["pid"] == pid && c["func"] == "dlopen" && c["name"] == "libm.so.6")
        .expect("its dlopen");
    assert_eq!(opened["ok"], true);
    let exit = trace
        .of_type("exit")
        .find(|e| e["pid"] == pid)
        .expect("its exit");
    assert_eq!(exit["code"], 3);
    trace.assert_nothing_lost();
}

#[test]
fn a_unit_that_is_not_there_and_ptrace_for_a_cgroup_are_bad_input() {
    let out = tracer()
        .args(["attach", "--unit", "vgpu-no-such.service"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("vgpu-no-such.service"), "{stderr}");
    let out = tracer()
        .args(["attach", "--backend", "ptrace", "--cgroup", "/x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needs the eBPF backend"), "{stderr}");
}

/// `attach --log FILE` reads what the log already holds (a discovery at start-up) and what is
/// added while tracing, and the verdict hears it.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn attach_with_a_log_file_reads_its_past_and_what_is_added() {
    let _serial = serial();
    let log = temp_file("ollama-log");
    std::fs::write(
        &log,
        "time=2026-11-30T15:00:00.000Z level=INFO source=runner.go:67 msg=\"discovering available GPUs...\"\n\
         time=2026-11-30T15:00:01.000Z level=INFO source=types.go:42 msg=\"inference compute\" id=0 library=CUDA compute=9.0\n",
    )
    .unwrap();
    let mut target = Command::new(fixture("dl-fixture"))
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let file = temp_file("attach-log");
    let mut tracer = tracer()
        .args(["attach", "--format", "jsonl", "-o"])
        .arg(&*file)
        .arg("--log")
        .arg(&*log)
        .arg(target.id().to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, _stderr) = until_armed(&mut tracer);
    // A refresh at model load, found no GPU this time.
    let mut appended = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    appended
        .write_all(
            b"time=2026-11-30T15:10:00.000Z level=INFO source=runner.go:67 msg=\"discovering available GPUs...\"\n\
              time=2026-11-30T15:10:01.000Z level=INFO source=types.go:60 msg=\"inference compute\" id=cpu library=cpu\n",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(target.wait_with_output().unwrap().status.success());
    assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
    let trace = Trace::read(&file);
    let says: Vec<String> = trace
        .of_type("log")
        .filter(|l| l["stream"] == "file")
        .map(|l| l["ollama"]["says"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        says,
        [
            "discovering",
            "inference-compute",
            "discovering",
            "inference-compute"
        ]
    );
    let verdict = trace.summary()["verdict"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        verdict.ends_with("; Ollama reported library=cpu"),
        "{verdict}"
    );
}

/// A process whose C library is a file of its own (as in a container: another mount
/// namespace, another inode) has that file's dl* functions probed before its code runs: the
/// kernel holds it at the mapping, as for a new CUDA library.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_c_library_of_its_own_is_probed_before_the_process_runs() {
    let _serial = serial();
    let dir = temp_dir("own-libc");
    let host = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("the host's libc");
    std::fs::copy(host, dir.path().join("libc.so.6")).unwrap();
    let file = temp_file("own-libc");
    let out = tracer()
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&*file)
        .arg("--")
        .arg(fixture("storm"))
        .args(["open", "libm.so.6", "4"])
        .env("LD_LIBRARY_PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let trace = Trace::read(&file);
    let own = dir.path().join("libc.so.6").display().to_string();
    assert!(
        trace.of_type("load").any(|l| l["path"] == own),
        "the copy was not loaded"
    );
    let call = trace
        .of_type("call")
        .find(|c| c["func"] == "dlopen" && c["name"] == "libm.so.6")
        .expect("the dlopen through the copy's dlopen");
    assert_eq!(call["ok"], true);
    trace.assert_nothing_lost();
}
