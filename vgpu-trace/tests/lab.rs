//! The tracer on the scenario lab's Ollama stand-in: what a shim author would look for in a
//! real Ollama trace (runner children, their environment, the backend dlopen and its dlerror).
use serde_json::Value;

mod common;
use common::*;

/// `vgpu-trace run -- vgpu-lab run PRESET --era ERA`, with the shims the preset records.
/// How the trace arms the CUDA/NVML API probes.
#[derive(Clone, Copy, PartialEq)]
enum Arming {
    /// Hold each process that maps a new CUDA/NVML library until its probes are in (default).
    Stop,
    /// Never hold a process (`--no-stop`).
    NoStop,
}

fn trace_preset(preset: &str, era: &str, arming: Arming) -> Trace {
    trace_lab(preset, era, arming, &[])
}

/// As `trace_preset`, with more arguments for `vgpu-lab run` (`--load-model`).
fn trace_lab(preset: &str, era: &str, arming: Arming, lab_args: &[&str]) -> Trace {
    // Tests run in parallel: each run gets its own scenario dir and trace file.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("lab-{preset}-{era}-{run}");
    let scratch = temp_dir(&tag);
    let dir = scratch.path();
    let mut cmd = vec![
        fixture("vgpu-lab").to_string_lossy().into_owned(),
        "run".into(),
        preset.into(),
        "--era".into(),
        era.into(),
        "--dir".into(),
        dir.to_string_lossy().into_owned(),
        // The tracer reads the files behind loads as it writes them; real installs stay put,
        // so the scenario does too until the trace is read.
        "--keep".into(),
    ];
    cmd.extend(lab_args.iter().map(|a| a.to_string()));
    let config = dir.join("etc/vgpu-trace/shims.toml");
    let mut extra = vec!["--shims-config", config.to_str().unwrap()];
    if arming == Arming::NoStop {
        extra.push("--no-stop");
    }
    let (trace, out) = run_traced(&tag, &extra, &mut cmd);
    drop(scratch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    trace.assert_nothing_lost();
    trace
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn env_value<'a>(exec: &'a Value, key: &str) -> Option<&'a str> {
    strings(&exec["env"])
        .into_iter()
        .find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
}

impl Trace {
    fn execs_with(&self, arg: &str) -> Vec<&Value> {
        self.of_type("exec")
            .filter(|e| strings(&e["argv"]).contains(&arg))
            .collect()
    }

    fn calls_by(&self, pid: &Value, func: &str) -> Vec<&Value> {
        self.of_type("call")
            .filter(|c| &c["pid"] == pid && c["func"] == func)
            .collect()
    }
}

/// The runner's dlopen of `cuda_v12/libggml-cuda.so`.
fn backend_open<'a>(trace: &'a Trace, runner: &Value) -> &'a Value {
    let opens = trace.calls_by(&runner["pid"], "dlopen");
    let found: Vec<_> = opens
        .into_iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("/cuda_v12/libggml-cuda.so"))
        })
        .collect();
    assert_eq!(found.len(), 1, "runner {}: {found:?}", runner["pid"]);
    found[0]
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn healthy_era_b_runners_load_the_backend_and_the_shim() {
    let _serial = serial();
    let trace = trace_preset("healthy", "b", Arming::Stop);
    let serve = &trace.execs_with("serve")[0];
    let runners = trace.execs_with("runner");
    assert_eq!(
        runners.len(),
        2,
        "first pass + GGML_CUDA_INIT pass: {runners:#?}"
    );
    for runner in &runners {
        assert_eq!(runner["ppid"], serve["pid"]);
        assert_eq!(
            &strings(&runner["argv"])[1..4],
            ["runner", "--ollama-engine", "--port"]
        );
        let ld_path = env_value(runner, "LD_LIBRARY_PATH").expect("runner LD_LIBRARY_PATH");
        let dirs: Vec<&str> = ld_path.split(':').collect();
        assert!(
            dirs[0].ends_with("/lib/ollama") && dirs[1].ends_with("/lib/ollama/cuda_v12"),
            "{dirs:?}"
        );
        assert!(
            dirs[2].ends_with("/opt/vgpu/lib"),
            "the service's own path comes last: {dirs:?}"
        );
        assert!(env_value(runner, "OLLAMA_LIBRARY_PATH").is_some());

        let open = backend_open(&trace, runner);
        assert_eq!(open["ok"], true, "{open}");
        assert_eq!(open["mode"], libc::RTLD_NOW | libc::RTLD_LOCAL);
        // libcudart reaches the driver by soname and one dlsym.
        let pid = &runner["pid"];
        assert!(
            trace
                .calls_by(pid, "dlopen")
                .iter()
                .any(|c| c["name"] == "libcuda.so.1" && c["ok"] == true)
        );
        let gpa: Vec<_> = trace
            .calls_by(pid, "dlsym")
            .into_iter()
            .filter(|c| c["name"] == "cuGetProcAddress_v2")
            .collect();
        assert_eq!(gpa.len(), 1, "{gpa:?}");
        assert_eq!(gpa[0]["ok"], true);
        // NVML for free memory: the WSL path fails, the soname works.
        let nvml: Vec<_> = trace
            .calls_by(pid, "dlopen")
            .into_iter()
            .filter(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("libnvidia-ml"))
            })
            .collect();
        assert_eq!(nvml.len(), 2, "{nvml:?}");
        assert_eq!(
            (nvml[0]["ok"].clone(), nvml[1]["ok"].clone()),
            (Value::Bool(false), Value::Bool(true))
        );
        // Serve kills each runner once it has answered.
        let exit = trace
            .of_type("exit")
            .find(|e| &e["pid"] == pid)
            .expect("runner exit");
        assert_eq!(exit["signal"], 9, "{exit}");
    }
    // libcuda.so.1 arrives with libggml-cuda.so, as its DT_NEEDED, with no dlopen of its own.
    for runner in &runners {
        let load = trace
            .of_type("load")
            .find(|l| l["pid"] == runner["pid"] && l["name"] == "libcuda.so.1")
            .expect("libcuda.so.1 load");
        assert!(
            load["needed_by"]
                .as_str()
                .is_some_and(|n| n.ends_with("/cuda_v12/libggml-cuda.so")),
            "{load}"
        );
        assert!(
            load["path"]
                .as_str()
                .unwrap()
                .ends_with("/opt/vgpu/lib/libcuda.so.1"),
            "{load}"
        );
        assert_eq!(load["class"], "shim", "{load}");
        assert!(load.get("predicted").is_none(), "the model agrees: {load}");
    }
    let second = runners
        .iter()
        .find(|r| env_value(r, "GGML_CUDA_INIT") == Some("1"))
        .expect("init pass");
    assert!(env_value(second, "CUDA_VISIBLE_DEVICES").is_some_and(|v| v.starts_with("GPU-")));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn broken_presets_show_the_failing_backend_dlopen_and_why() {
    let _serial = serial();
    for (preset, why, step) in [
        (
            "shim-missing-symbols",
            "libggml-cuda.so: undefined symbol: cu",
            "undefined symbol",
        ),
        (
            "shim-off-path",
            "libcuda.so.1: cannot open shared object file: No such file or directory",
            "not found",
        ),
    ] {
        let trace = trace_preset(preset, "b", Arming::Stop);
        let runners = trace.execs_with("runner");
        assert_eq!(
            runners.len(),
            1,
            "{preset}: no device, so no second pass: {runners:#?}"
        );
        let open = backend_open(&trace, runners[0]);
        assert_eq!(open["ok"], false, "{preset}: {open}");
        let error = open["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{preset}: {error:?} lacks {why:?}");
        assert_eq!(open["failed_step"], step, "{preset}: {open}");
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_driver_loaded_instead_of_the_shim_is_flagged() {
    let _serial = serial();
    let trace = trace_preset("driver-shadows-shim", "b", Arming::Stop);
    let runner = &trace.execs_with("runner")[0];
    let cuda = trace
        .calls_by(&runner["pid"], "dlopen")
        .into_iter()
        .find(|c| c["name"] == "libcuda.so.1")
        .expect("cudart's dlopen");
    assert!(
        cuda["path"]
            .as_str()
            .unwrap()
            .ends_with("/usr/local/nvidia/lib64/libcuda.so.1"),
        "{cuda}"
    );
    assert_eq!(cuda["class"], "nvidia-driver", "{cuda}");
    assert_eq!(
        cuda["warning"], "NVIDIA's driver was loaded as libcuda.so.1, not the shim",
        "{cuda}"
    );
}

/// The discovery calls of a process, by function name.
fn api_calls<'a>(trace: &'a Trace, pid: &Value, function: &str) -> Vec<&'a Value> {
    trace
        .of_type("api")
        .filter(|c| &c["pid"] == pid && c["function"] == function)
        .collect()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn discovery_calls_show_their_return_codes() {
    let _serial = serial();
    let trace = trace_preset("healthy", "b", Arming::Stop);
    let runner = &trace.execs_with("runner")[0];
    let pid = &runner["pid"];
    let init = api_calls(&trace, pid, "cuInit");
    assert_eq!(
        init.len(),
        1,
        "cuInit armed before its first call: {init:?}"
    );
    assert_eq!(init[0]["result"], "CUDA_SUCCESS");
    let count = api_calls(&trace, pid, "cuDeviceGetCount");
    assert_eq!(count[0]["values"]["count"], 1, "{count:?}");
    // libcudart asks for the driver's functions by name.
    let asked: Vec<&str> = api_calls(&trace, pid, "cuGetProcAddress_v2")
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(
        asked.contains(&"cuInit") && asked.contains(&"cuDeviceGetCount"),
        "{asked:?}"
    );
    assert_eq!(
        api_calls(&trace, pid, "nvmlInit_v2")[0]["result"],
        "NVML_SUCCESS"
    );
    let memory = api_calls(&trace, pid, "nvmlDeviceGetMemoryInfo");
    assert_eq!(memory[0]["values"]["total"], 80u64 << 30, "{memory:?}");

    for (preset, function, result) in [
        ("cuinit-no-device", "cuInit", "CUDA_ERROR_NO_DEVICE"),
        (
            "nvml-init-fails",
            "nvmlInit_v2",
            "NVML_ERROR_DRIVER_NOT_LOADED",
        ),
    ] {
        let trace = trace_preset(preset, "b", Arming::Stop);
        let runner = &trace.execs_with("runner")[0];
        let calls = api_calls(&trace, &runner["pid"], function);
        assert!(!calls.is_empty(), "{preset}: no {function} call");
        assert_eq!(calls[0]["result"], result, "{preset}: {:?}", calls[0]);
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn era_c_children_are_all_seen() {
    let _serial = serial();
    let trace = trace_preset("healthy", "c", Arming::NoStop);
    let serve = &trace.execs_with("serve")[0];
    let servers = trace.execs_with("--no-webui");
    let lists = trace.execs_with("--list-devices");
    let probes = trace.execs_with("gpu-discover");
    assert_eq!(
        (servers.len(), lists.len(), probes.len()),
        (2, 2, 2),
        "the device's second pass runs all three children again"
    );
    for child in servers.iter().chain(&lists).chain(&probes) {
        assert_eq!(child["ppid"], serve["pid"]);
    }
    let backend = env_value(servers[0], "GGML_BACKEND_PATH").expect("GGML_BACKEND_PATH");
    assert!(backend.ends_with("/cuda_v12/libggml-cuda.so"), "{backend}");
    // gpu-discover gets the llama-server children's environment (as v0.30+ gives it).
    for key in ["LD_LIBRARY_PATH", "GGML_BACKEND_PATH"] {
        assert_eq!(
            env_value(probes[0], key),
            env_value(servers[0], key),
            "{key}"
        );
    }
    // The second pass: that device alone, deeply initialised.
    for child in [servers[1], lists[1], probes[1]] {
        assert_eq!(env_value(child, "CUDA_VISIBLE_DEVICES"), Some("0"));
        assert_eq!(env_value(child, "GGML_CUDA_INIT"), Some("1"));
    }
    // Before its first child serve's Go runtime forks once without exec (its pidfd check).
    let first = trace
        .of_type("spawn")
        .find(|s| s["pid"] == serve["pid"])
        .expect("serve's first spawn");
    assert!(
        !trace.of_type("exec").any(|e| e["pid"] == first["child"]),
        "{first}"
    );
    // gpu-discover asks the driver directly.
    let pid = &probes[0]["pid"];
    let cuda = trace
        .calls_by(pid, "dlopen")
        .into_iter()
        .find(|c| c["name"] == "libcuda.so.1")
        .expect("libcuda dlopen");
    assert_eq!(cuda["ok"], true);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn era_d_serve_maps_the_shim_through_mlx_and_discovery_runs_again_at_model_load() {
    let _serial = serial();
    let trace = trace_lab("healthy", "d", Arming::Stop, &["--load-model"]);
    let serve = &trace.execs_with("serve")[0];
    // serve maps the shim itself: a DT_NEEDED of MLX's libmlxc.so, with no dlopen of its own.
    let mapped = trace
        .of_type("load")
        .find(|l| l["pid"] == serve["pid"] && l["name"] == "libcuda.so.1")
        .expect("serve loads libcuda.so.1");
    assert_eq!(mapped["class"], "shim", "{mapped}");
    assert!(
        mapped["needed_by"]
            .as_str()
            .is_some_and(|n| n.ends_with("/mlx_cuda_v13/libmlxc.so")),
        "{mapped}"
    );
    // Three dirs probed, both CUDA dirs' device verified, then the kept dir (cuda_v13) again
    // at model load: llama-server as a server six times, each with its dir's backend.
    let servers = trace.execs_with("--no-webui");
    let dirs: Vec<&str> = servers
        .iter()
        .filter_map(|e| env_value(e, "GGML_BACKEND_PATH"))
        .filter_map(|b| b.rsplit('/').nth(1))
        .collect();
    let count = |dir: &str| dirs.iter().filter(|d| **d == dir).count();
    assert_eq!(
        (count("cuda_v12"), count("cuda_v13"), count("vulkan")),
        (2, 3, 1),
        "{dirs:?}"
    );
    assert_eq!(trace.execs_with("gpu-discover").len(), 6);
    let refresh = servers.last().unwrap();
    assert_eq!(env_value(refresh, "CUDA_VISIBLE_DEVICES"), Some("0"));
    assert_eq!(refresh["ppid"], serve["pid"]);
    // The refresh's children reach the shim like the start-up ones.
    let refreshed = trace
        .of_type("api")
        .filter(|a| a["function"] == "cuInit" && a["result"] == "CUDA_SUCCESS")
        .filter(|a| a["ts_ns"].as_u64() > refresh["ts_ns"].as_u64())
        .count();
    assert!(refreshed >= 1, "no cuInit after the model-load refresh");
    let verdict = &trace.summary()["verdict"];
    assert_eq!(verdict["outcome"], "shim-used", "{verdict}");
    assert!(
        verdict["text"].as_str().unwrap().contains("cuda_v13"),
        "{verdict}"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_scratch_install_gone_before_its_load_is_read_is_still_classified() {
    let _serial = serial();
    // No --keep: the scenario is removed as the lab exits, often before the tracer reads the
    // second runner's libraries (which it does not hold, the shim being armed already).
    let mut cmd = vec![
        fixture("vgpu-lab").to_string_lossy().into_owned(),
        "run".into(),
        "healthy".into(),
        "--era".into(),
        "b".into(),
    ];
    let (trace, out) = run_traced("lab-scratch", &[], &mut cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loads: Vec<&Value> = trace
        .of_type("load")
        .filter(|l| l["name"] == "libcuda.so.1")
        .collect();
    assert_eq!(loads.len(), 2, "one per runner");
    for load in &loads {
        assert_eq!(load["class"], "shim", "{load}");
    }
    assert_eq!(trace.summary()["verdict"]["outcome"], "shim-used");
}
