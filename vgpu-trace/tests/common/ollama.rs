//! The real Ollama, laid out by `cargo xtask test` from the copy beside the project (it names
//! the tree in `VGPU_TEST_REAL_OLLAMA`), and what its tests share: a serve of their own (home,
//! models, port), the reference shims where a shim author puts them, a recording that stops at
//! Ollama's conclusion.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Trace, fixture, temp_dir, temp_file, tracer};

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
