//! The real Ollama, laid out by `cargo xtask test` from the copy beside the project (it names
//! the tree in `VGPU_TEST_REAL_OLLAMA`), and what its tests share: a serve of their own (home,
//! models, port), the reference shims where a shim author puts them, a recording that stops at
//! Ollama's conclusion.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{PATIENCE, Trace, fixture, temp_dir, temp_file, tracer, until_armed, wait_timeout};

pub struct RealOllama {
    pub root: PathBuf,
}

impl RealOllama {
    /// The laid-out tree, or None (and the test recorded as skipped) where there is none.
    pub fn find(test: &str) -> Option<Self> {
        match std::env::var_os("VGPU_TEST_REAL_OLLAMA") {
            Some(root) if Path::new(&root).join("bin/ollama").exists() => {
                Some(Self { root: root.into() })
            }
            _ => {
                vgpu_trace_fixtures::skip_test(
                    test,
                    "no real Ollama (cargo xtask test lays it out from ../shared/real-ollama)",
                );
                None
            }
        }
    }

    pub fn ollama(&self) -> PathBuf {
        self.root.join("bin/ollama")
    }

    /// lib/ollama: the llama-server, the ggml backends, cuda_v12.
    pub fn lib(&self) -> PathBuf {
        self.root.join("lib/ollama")
    }
}

/// What one serve keeps to itself: its home (Ollama writes a key there), models dir and port.
pub struct Serve {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Serve {
    pub fn new() -> Self {
        let dir = temp_dir("ollama");
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        Self {
            dir,
            port: free_port(),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("HOME".into(), self.dir.path().into()),
            ("OLLAMA_HOST".into(), self.host().into()),
            (
                "OLLAMA_MODELS".into(),
                self.dir.path().join("models").into(),
            ),
        ]
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The reference shims as an installer lays them out in `dir`: the files, and the NVIDIA
/// sonames linked to them.
pub fn install_shims(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (built, file, soname) in [
        ("libvgpu_cuda.so", "libvgpu-cuda.so", "libcuda.so.1"),
        ("libvgpu_nvml.so", "libvgpu-nvml.so", "libnvidia-ml.so.1"),
    ] {
        std::fs::copy(fixture(built), dir.join(file)).unwrap();
        std::os::unix::fs::symlink(file, dir.join(soname)).unwrap();
    }
}

/// A recording of `command` (with `env` added) until Ollama logs its conclusion ("inference
/// compute"), bounded by a minute. The serve it started is stopped afterwards. Returns the
/// trace and the timeline the tracer showed.
pub fn record_until_concluded(command: &[OsString], env: &[(String, OsString)]) -> (Trace, String) {
    let file = temp_file("real-ollama");
    let timeline = temp_file("real-ollama-timeline");
    let said = temp_file("real-ollama-stderr");
    let status = tracer()
        .args(["record", "--view", "compact", "--color", "never"])
        .args([
            "--until",
            "log=inference compute",
            "--duration",
            "60s",
            "-o",
        ])
        .arg(&file)
        .arg("--")
        .args(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        // The serve outlives the recording and keeps what it inherited: files, not pipes
        // that someone waits to close.
        .stdout(Stdio::from(std::fs::File::create(&timeline).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&said).unwrap()))
        .status()
        .unwrap();
    let shown = std::fs::read_to_string(&timeline).unwrap();
    let trace = Trace::read(&file);
    stop_serve(&trace);
    let stderr = std::fs::read_to_string(&said).unwrap();
    assert!(status.success(), "{stderr}\n{shown}");
    assert_on_ebpf(&trace);
    assert!(
        stderr.contains("seen log line containing \"inference compute\"; stopping"),
        "the recording did not stop at Ollama's conclusion: {stderr}"
    );
    (trace, shown)
}

/// `attach ollama --log LOG` until Ollama concludes, bounded by a minute: once the tracer is
/// armed, `start` lets the service (held until then) begin its discovery. Returns what the
/// tracer said while arming, and the trace, made by eBPF.
pub fn attach_until_concluded(log: &Path, start: impl FnOnce()) -> (String, Trace) {
    let (said, trace) = attach_with_until_concluded("ebpf", log, start);
    assert_on_ebpf(&trace);
    (said, trace)
}

/// [`attach_until_concluded`] with `--backend B`.
pub fn attach_with_until_concluded(
    backend: &str,
    log: &Path,
    start: impl FnOnce(),
) -> (String, Trace) {
    let file = temp_file("real-ollama-attach");
    let mut tracer = tracer()
        .args(["attach", "--backend", backend, "ollama", "--log"])
        .arg(log)
        .args(["--until", "log=inference compute", "--duration", "60s"])
        .args(["--format", "jsonl", "-o"])
        .arg(&*file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (said, _stderr) = until_armed(&mut tracer);
    start();
    assert!(wait_timeout(&mut tracer, PATIENCE).success(), "{said}");
    let trace = Trace::read(&file);
    assert_eq!(trace.lines[0]["backend"], backend);
    (said, trace)
}

/// Stops the `ollama serve` of a trace, which outlived its recording.
pub fn stop_serve(trace: &Trace) {
    for exec in trace.of_type("exec") {
        if exec["argv"][1] != "serve" {
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(exec["pid"].as_i64().unwrap() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// A trace made by the eBPF backend: these tests are about what the kernel sees.
pub fn assert_on_ebpf(trace: &Trace) {
    let header = trace.of_type("header").next().expect("a header");
    assert_eq!(header["backend"], "ebpf", "{header}");
}

/// What a discovery by the real v0.32.15 looks like in any trace of it: serve's three children
/// with their argv and environment, each opening the bundled ggml backends.
pub fn assert_real_discovery(trace: &Trace, ollama: &RealOllama) {
    let lib = ollama.lib();
    let lib = lib.to_str().unwrap();
    let children: Vec<&Value> = trace
        .of_type("exec")
        .filter(|e| {
            e["argv"][1] != "serve"
                && e["filename"]
                    .as_str()
                    .unwrap()
                    .starts_with(ollama.root.to_str().unwrap())
        })
        .collect();
    let argv = |e: &Value| -> Vec<String> {
        e["argv"].as_array().unwrap()[1..]
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    let shapes: Vec<String> = children
        .iter()
        .map(|e| {
            let args = argv(e).join(" ");
            // The port is chosen at random.
            let args = args
                .split(' ')
                .scan(false, |after_port, a| {
                    let shown = if *after_port { "N" } else { a };
                    *after_port = a == "--port";
                    Some(shown.to_string())
                })
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{} {args}",
                Path::new(e["filename"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
            )
        })
        .collect();
    assert_eq!(
        shapes,
        [
            "llama-server --port N --host 127.0.0.1 --no-webui --offline --verbose".to_string(),
            "llama-server --list-devices --offline --verbose".to_string(),
            format!("ollama gpu-discover --lib-dir {lib} --lib-dir {lib}/cuda_v12"),
        ],
        "serve's discovery children, in order"
    );
    for child in &children {
        let env: Vec<&str> = child["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            env.iter()
                .any(|v| v.starts_with(&format!("LD_LIBRARY_PATH={lib}:{lib}/cuda_v12"))),
            "{env:?}"
        );
        assert!(
            env.contains(&format!("GGML_BACKEND_PATH={lib}/cuda_v12/libggml-cuda.so").as_str()),
            "{env:?}"
        );
        let pid = &child["pid"];
        let opened: Vec<&str> = trace
            .of_type("call")
            .filter(|c| &c["pid"] == pid && c["func"] == "dlopen")
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(
            opened.contains(&format!("{lib}/cuda_v12/libggml-cuda.so").as_str()),
            "{opened:?}"
        );
        if child["argv"][1] != "gpu-discover" {
            // ggml scores every CPU variant it ships.
            let variants = opened
                .iter()
                .filter(|n| n.starts_with(&format!("{lib}/libggml-cpu-")))
                .count();
            assert!(variants >= 14, "{opened:?}");
        }
    }
}

/// The load of `libcuda.so.1` that ld.so made for libggml-cuda.so (a DT_NEEDED, never
/// dlopened by name) in each of serve's children that got one.
pub fn driver_loads(trace: &Trace) -> Vec<&Value> {
    trace
        .of_type("load")
        .filter(|l| {
            l["name"] == "libcuda.so.1"
                && l["needed_by"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("/libggml-cuda.so"))
        })
        .collect()
}

/// Ollama's own log lines, as the trace kept them.
pub fn log_lines(trace: &Trace) -> Vec<&str> {
    trace
        .of_type("log")
        .filter_map(|l| l["text"].as_str())
        .collect()
}

pub fn verdict(trace: &Trace) -> (&str, &str) {
    let v = &trace.summary()["verdict"];
    (v["outcome"].as_str().unwrap(), v["text"].as_str().unwrap())
}

/// The shim as the real runtime meets it: libggml-cuda.so's DT_NEEDED resolved to it, cudart
/// asking it for every entry point and for NVIDIA's private tables, which an emulating shim
/// cannot give; Ollama falls back to the CPU and says why.
pub fn assert_shim_refused_by_cudart(trace: &Trace, shims: &Path, shown: &str) {
    let loads = driver_loads(trace);
    assert_eq!(loads.len(), 3, "one per child: {loads:?}");
    for load in loads {
        assert_eq!(load["class"], "shim", "{load}");
        let path = load["path"].as_str().unwrap();
        assert!(Path::new(path).starts_with(shims), "{load}");
    }
    let apis: Vec<(&str, &str)> = trace
        .of_type("api")
        .map(|a| {
            (
                a["function"].as_str().unwrap(),
                a["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        apis.contains(&("cuGetProcAddress_v2", "CUDA_SUCCESS")),
        "cudart looks entry points up through the shim: {apis:?}"
    );
    assert!(
        apis.contains(&("cuGetExportTable", "CUDA_ERROR_NOT_FOUND")),
        "{apis:?}"
    );
    let logs = log_lines(trace);
    assert!(
        logs.iter().any(
            |l| l.contains("ggml_cuda_init: failed to initialize CUDA: named symbol not found")
        ),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("msg=\"inference compute\" id=cpu library=cpu"))
    );
    let (outcome, text) = verdict(trace);
    assert_eq!(outcome, "init-failed", "{text}");
    assert!(
        text.contains("cuGetExportTable = CUDA_ERROR_NOT_FOUND (500)")
            && text.ends_with(
                "; Ollama reported library=cpu (its log: ggml_cuda_init: failed to \
                 initialize CUDA: named symbol not found)"
            ),
        "{text}"
    );
    assert!(shown.contains("verdict: init-failed: "), "{shown}");
}
