//! Helpers shared by the end-to-end test files: run the real binary, read its JSONL trace.
#![allow(dead_code, reason = "each test file uses its own subset")]
use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Output},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

pub mod ollama;

/// Root tests that trace run one at a time: sessions no longer wait for each other, but each
/// traced workload (bursts, the lab's discovery timeouts) is sized for a machine it has to
/// itself.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub const ROOT: &str = "needs root and a BPF-capable kernel (cargo xtask test runs it)";

/// The tracer, on eBPF or nothing: a kernel that refuses the programs fails the test rather
/// than passing it on ptrace. Tests of ptrace or of the fall back say `--backend`.
pub fn tracer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgpu-trace"));
    cmd.env("VGPU_TRACE_BACKEND", "ebpf");
    cmd
}

/// Fixture binaries are built next to this test's deps directory by `cargo xtask test`.
pub fn fixture(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} missing: build vgpu-trace-fixtures first",
        path.display()
    );
    path
}

/// A new empty file with a random name (created O_EXCL, mode 0600), removed on drop: tests
/// run as root in parallel, so a temp path must be neither predictable nor shared.
pub fn temp_file(tag: &str) -> tempfile::TempPath {
    tempfile::Builder::new()
        .prefix(&format!("vgpu-trace-test-{tag}-"))
        .suffix(".jsonl")
        .tempfile()
        .unwrap()
        .into_temp_path()
}

/// A new private dir (random name, mode 0700), removed with its contents on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vgpu-trace-test-{tag}-"))
        .tempdir()
        .unwrap()
}

/// `key=value` lines a fixture printed.
pub fn facts(stdout: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn hex(facts: &HashMap<String, String>, key: &str) -> u64 {
    let v = facts
        .get(key)
        .unwrap_or_else(|| panic!("fixture did not print {key}: {facts:?}"));
    u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
}

pub fn num(facts: &HashMap<String, String>, key: &str) -> u64 {
    facts
        .get(key)
        .unwrap_or_else(|| panic!("fixture did not print {key}: {facts:?}"))
        .parse()
        .unwrap()
}

pub struct Trace {
    pub lines: Vec<Value>,
}

impl Trace {
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let _ = std::fs::remove_file(path);
        Self {
            lines: text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
                .collect(),
        }
    }

    pub fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.lines.iter().filter(move |l| l["type"] == ty)
    }

    pub fn summary(&self) -> &Value {
        self.of_type("summary").next().expect("summary line")
    }

    /// The one call of `func` on `name` by thread `tid`.
    pub fn call(&self, tid: u64, func: &str, name: &str) -> &Value {
        let found: Vec<_> = self
            .of_type("call")
            .filter(|c| c["tid"] == tid && c["func"] == func && c["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{func}({name}) by {tid}: {found:?}\nall calls: {:#?}",
            self.of_type("call").collect::<Vec<_>>()
        );
        found[0]
    }

    pub fn assert_nothing_lost(&self) {
        assert_eq!(self.summary()["lost"], 0, "events were lost");
        assert!(self.of_type("lost").next().is_none());
        let missed = self.summary()["missed"].as_u64().unwrap_or(0);
        assert_eq!(
            missed, 0,
            "the kernel skipped {missed} runs of the programs"
        );
    }
}

/// `vgpu-trace run --format jsonl -o FILE -- cmd`: the trace, and the command's output.
pub fn run_traced(tag: &str, extra: &[&str], cmd: &mut Vec<String>) -> (Trace, Output) {
    let file = temp_file(tag);
    let out = tracer()
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&file)
        .args(extra)
        .arg("--")
        .args(cmd.drain(..))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("armed in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (Trace::read(&file), out)
}

/// Waits for `child` to exit, killing it and failing the test after `limit`. Its pidfd turns
/// readable when it exits, so this wakes on the exit itself, not on a polling tick.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    // SAFETY: pidfd_open on our own unreaped child; the fd is owned from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    let ready = loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, ms) } {
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            n => break n,
        }
    };
    if ready == 0 {
        let _ = child.kill();
        let _ = child.wait();
        panic!("process {} did not finish within {limit:?}", child.id());
    }
    child.wait().unwrap()
}

/// Longest a test waits for a process that should finish; past it, it fails (and continues
/// whatever it left stopped) instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The lines written to a pipe as they come, ending when every process holding it (a tracer,
/// the command it runs, its children) is gone.
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn of(pipe: impl std::io::Read + Send + 'static) -> Self {
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
    pub fn until(&self, prefix: &str) -> String {
        loop {
            match self.rx.recv_timeout(PATIENCE) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line starting with {prefix:?}: {e}"),
            }
        }
    }

    /// Waits for the end of the output: every writer has exited. Returns what came first.
    pub fn to_end(&self) -> Result<Vec<String>, String> {
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

/// `vgpu-trace ARGS` without privileges: as `nobody` when we are root, else as ourselves.
#[allow(dead_code)]
pub fn unprivileged(args: &[&str]) -> Output {
    let tracer = env!("CARGO_BIN_EXE_vgpu-trace");
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", tracer]);
        c
    } else {
        Command::new(tracer)
    };
    // Without privileges BPF is refused: these runs are about the fall back.
    cmd.env("VGPU_TRACE_BACKEND", "auto")
        .args(args)
        .output()
        .unwrap()
}

/// Builds `tests/data/SOURCE` into a shared library at `out` with `soname`, as a C compiler
/// at -O2 builds one (`$CC`, else `cc`).
pub fn build_c_library(source: &str, out: &Path, soname: &str) {
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-fPIC", "-shared"])
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-o")
        .arg(out)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(source),
        )
        .status()
        .unwrap();
    assert!(status.success(), "building {source}");
}

/// Reads a tracer's stderr (piped) until it says it is armed (eBPF) or attached (ptrace).
/// Returns what it said so far, and the rest of its stderr, to keep open while it runs: a
/// tracer whose stderr was closed would fail to write its last words.
pub fn until_armed(tracer: &mut Child) -> (String, BufReader<ChildStderr>) {
    let mut stderr = BufReader::new(tracer.stderr.take().expect("stderr piped"));
    let mut said = String::new();
    let mut line = String::new();
    while !line.contains("armed in") && !line.contains("attached with ptrace") {
        line.clear();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "the tracer ended before it was armed: {said}"
        );
        said.push_str(&line);
    }
    (said, stderr)
}

/// `seen` is `truth`, or short by no more than the records the trace's summary says the
/// kernel could not deliver and the program runs it says the kernel skipped.
pub fn exact_or_lost(what: &str, seen: usize, truth: u64, trace: &Trace) {
    let lost =
        trace.summary()["lost"].as_u64().unwrap() + trace.summary()["missed"].as_u64().unwrap_or(0);
    let seen = seen as u64;
    if lost == 0 {
        assert_eq!(seen, truth, "{what}: nothing lost, so every one is there");
    } else {
        assert!(
            seen <= truth && truth - seen <= lost,
            "{what}: {seen} of {truth} seen, {lost} records lost"
        );
    }
}

/// `dl-libc` and a `libcuda.so.1` shim for it (tests/data/dl-libc.c, cuda-mini.c), built into
/// `dir` by `cc` (a C compiler and the flags that pick its C library: `cc`, `musl-gcc`). With
/// `root`, `dir` lies inside that root filesystem and its own compiler builds them there
/// (chroot), against its own C library. Returns (program, shim), as paths on the host.
pub fn build_dl_libc(dir: &Path, cc: &[&str], root: Option<&Path>) -> (PathBuf, PathBuf) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for source in ["dl-libc.c", "cuda-mini.c"] {
        std::fs::copy(data.join(source), dir.join(source)).unwrap();
    }
    // Paths as the compiler sees them.
    let seen = |name: &str| match root {
        Some(root) => Path::new("/")
            .join(dir.strip_prefix(root).expect("dir inside root"))
            .join(name),
        None => dir.join(name),
    };
    let seen = |name: &str| seen(name).display().to_string();
    for args in [
        vec![
            "-O2".into(),
            "-fPIC".into(),
            "-shared".into(),
            "-Wl,-soname,libcuda.so.1".into(),
            "-o".into(),
            seen("libcuda.so.1"),
            seen("cuda-mini.c"),
        ],
        vec![
            "-O2".into(),
            "-o".into(),
            seen("dl-libc"),
            seen("dl-libc.c"),
            // glibc before 2.34 keeps dlopen in libdl.
            "-ldl".into(),
        ],
    ] {
        let mut cmd = match root {
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(cc[0]);
                c
            }
            None => Command::new(cc[0]),
        };
        let out = cmd
            .args(&cc[1..])
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask test installs it)", cc[0]));
        assert!(out.status.success(), "{cc:?} {args:?}: {out:?}");
    }
    (dir.join("dl-libc"), dir.join("libcuda.so.1"))
}

/// What must be the same whichever C library ran dl-libc: the `dl*` calls (function, name,
/// whether it worked) in order, the CUDA calls and their results, the verdict's outcome.
pub type LibcShape = (Vec<(String, String, bool)>, Vec<(String, String)>, String);

pub fn libc_shape(trace: &Trace) -> LibcShape {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    // The shim's dir is each build's own: its file name is what counts.
    let name = |v: &Value| text(v).rsplit('/').next().unwrap_or("").to_string();
    let calls = trace
        .of_type("call")
        .map(|c| (text(&c["func"]), name(&c["name"]), c["ok"] == true))
        .collect();
    let api = trace
        .of_type("api")
        .map(|a| (text(&a["function"]), text(&a["result"])))
        .collect();
    let outcome = text(&trace.summary()["verdict"]["outcome"]);
    (calls, api, outcome)
}

/// The kernel's BPF links (probe attachments) alive on the machine, by id. A session's go
/// with its release (its programs a grace period later).
pub fn links() -> std::collections::BTreeSet<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .collect()
}

/// A scratch cgroup (v2) below the root, removed once its processes are gone.
pub struct ScratchCgroup {
    pub dir: std::path::PathBuf,
    pub path: String,
}

impl ScratchCgroup {
    pub fn new(tag: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = vgpu_trace::session::cgroup::v2_mount_in(&mountinfo).expect("cgroup2 mounted");
        let path = format!("/vgpu-trace-test-{tag}-{}", std::process::id());
        let dir = mount.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, path }
    }

    /// `sh -c` that moves itself into the cgroup, then execs `cmd`.
    pub fn start(&self, cmd: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "echo $$ > {}/cgroup.procs && exec {cmd}",
            self.dir.display()
        ));
        c
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// What both backends must agree on, modulo timing, pids and addresses: processes, the
/// libraries they loaded and why, every dl* call with its arguments, outcome and dlerror text,
/// and every CUDA/NVML call with its return code and values.
pub fn shape(trace: &Trace) -> Vec<String> {
    let mut shape: Vec<String> = trace
        .lines
        .iter()
        .filter_map(|e| {
            let comm = e["comm"].as_str().unwrap_or_default();
            match e["type"].as_str()? {
                "exec" => Some(format!("exec {comm} {}", e["argv"])),
                "spawn" => Some(format!("spawn by {comm}")),
                "exit" => Some(format!("exit {comm} {}", e["code"])),
                "load" => Some(format!(
                    "load {comm} {} needed by {} during {}",
                    e["name"], e["needed_by"], e["during"]
                )),
                "call" => Some(format!(
                    "call {comm} {}({}, {}) ok={} {} {}",
                    e["func"], e["name"], e["mode"], e["ok"], e["path"], e["error"]
                )),
                "api" if e["values"]["pfn"].is_null() => Some(format!(
                    "api {comm} {} = {} {} {}",
                    e["function"], e["result"], e["values"], e["text"]
                )),
                "api" => Some(format!("api {comm} {} = {}", e["function"], e["result"])),
                _ => None,
            }
        })
        .collect();
    shape.sort();
    shape
}

/// [`shape`] of a lab run in `dir`, with the dir and the runners' ports (which differ from run
/// to run) masked.
pub fn lab_shape(trace: &Trace, dir: &Path) -> Vec<String> {
    let mut masked: Vec<String> = shape(trace)
        .into_iter()
        .map(|line| {
            let line = line.replace(dir.to_str().unwrap(), "DIR");
            match line.split_once("\"--port\",\"") {
                Some((head, tail)) => {
                    format!(
                        "{head}\"--port\",\"PORT{}",
                        tail.trim_start_matches(|c: char| c.is_ascii_digit())
                    )
                }
                None => line,
            }
        })
        .collect();
    masked.sort();
    masked
}
