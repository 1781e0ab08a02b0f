//! `attach` under ptrace, which stops at no system call: loads come from ld.so's rendezvous,
//! the paths tried before them are predicted, and a process let go (or whose tracer dies)
//! carries on unharmed.
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

/// Blocks a shell until the test writes to it: the tracer attaches to a process that has not
/// started its work yet, with no child of its own meanwhile (a sleep loop would add some).
struct Gate(std::path::PathBuf);

impl Gate {
    fn new(dir: &Path) -> Self {
        let fifo = dir.join("gate");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        Self(fifo)
    }

    /// `read` from the gate, then `exec` `then`.
    fn shell(&self, then: &str) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(format!("read go < '{}'; exec {then}", self.0.display()))
            .stdout(Stdio::null())
            // Not the test's own stderr: under CI a file other processes write to, which
            // the ptrace backend would follow as theirs.
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn open(&self) {
        let mut gate = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.0)
            .unwrap();
        gate.write_all(b"go\n").unwrap();
    }
}

/// `attach --backend B ARGS PID`, once it says it follows the process; its stderr read on in
/// the background (so that it never blocks on a full pipe), returned at the end.
fn attach(backend: &str, args: &[&str], pid: u32) -> (Child, std::thread::JoinHandle<String>) {
    let mut tracer = tracer()
        .args(["attach", "--backend", backend])
        .args(args)
        .arg(pid.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (said, mut rest) = until_armed(&mut tracer);
    let stderr = std::thread::spawn(move || {
        let mut text = said;
        let _ = rest.read_to_string(&mut text);
        text
    });
    (tracer, stderr)
}

/// A lab preset (era B) started once the tracer has attached to the shell that execs it.
fn lab_preset_attached(preset: &str, backend: &str) -> (Trace, Vec<String>) {
    let tag = format!("attach-lab-{preset}-{backend}");
    let scratch = temp_dir(&tag);
    let gate = Gate::new(scratch.path());
    // The lab wants a dir of its own.
    let dir = &scratch.path().join("lab");
    let mut shell = gate.shell(&format!(
        "{} run {preset} --era b --dir '{}' --keep",
        fixture("vgpu-lab").display(),
        dir.display()
    ));
    let file = temp_file(&tag);
    let config = dir.join("etc/vgpu-trace/shims.toml");
    let args = [
        "--shims-config",
        config.to_str().unwrap(),
        "--format",
        "jsonl",
        "-o",
        file.to_str().unwrap(),
    ];
    let (mut tracer, stderr) = attach(backend, &args, shell.id());
    gate.open();
    assert!(shell.wait().unwrap().success(), "{preset} under {backend}");
    // It ends by itself once the shell, now the lab, and its children are gone.
    let status = wait_timeout(&mut tracer, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    let trace = Trace::read(&file);
    assert_eq!(trace.lines[0]["backend"], backend, "{stderr}");
    trace.assert_nothing_lost();
    let shape = lab_shape(&trace, dir);
    (trace, shape)
}

/// The paths tried before each load, by process name and loaded file name, in trace order.
fn tried_before_loads(trace: &Trace, key: &str) -> Vec<((String, String), Vec<String>)> {
    trace
        .of_type("load")
        .filter_map(|l| {
            let tried: Vec<String> = l[key]
                .as_array()?
                .iter()
                .map(|p| p["path"].as_str().unwrap().to_string())
                .collect();
            let by = (
                l["comm"].as_str()?.to_string(),
                l["name"].as_str()?.to_string(),
            );
            Some((by, tried))
        })
        .collect()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn lab_presets_attached_give_the_same_loads_and_verdicts_under_both_backends() {
    let _serial = serial();
    for (preset, outcome) in [
        ("healthy", "shim-used"),
        ("shim-missing-symbols", "missing-symbols"),
    ] {
        let (ebpf, ebpf_shape) = lab_preset_attached(preset, "ebpf");
        let (ptrace, ptrace_shape) = lab_preset_attached(preset, "ptrace");
        for trace in [&ebpf, &ptrace] {
            assert_eq!(trace.summary()["verdict"]["outcome"], outcome, "{preset}");
        }
        // Processes, loads with their DT_NEEDED requester and dlopen, calls, API results.
        assert_eq!(ebpf_shape, ptrace_shape, "{preset}");
        assert!(
            ptrace_shape
                .iter()
                .any(|l| l.starts_with("load ") && !l.contains("needed by null")),
            "DT_NEEDED loads are among them: {ptrace_shape:#?}"
        );
        // Seen, not inferred, under eBPF; read from ld.so's list under ptrace, where what was
        // tried first is the model's word and says so.
        assert!(ebpf.of_type("load").all(|l| l["linked"].is_null()));
        assert!(
            ptrace
                .of_type("load")
                .all(|l| l["linked"] == true && l["probes"].is_null()),
            "{preset}"
        );
        let observed = tried_before_loads(&ebpf, "probes");
        let predicted = tried_before_loads(&ptrace, "predicted_probes");
        assert!(!observed.is_empty(), "{preset}: no load was searched for");
        for (k, (by, tried)) in observed.iter().enumerate() {
            // The same process and file's load, as many times over.
            let nth = observed[..k].iter().filter(|(b, _)| b == by).count();
            let prediction = predicted
                .iter()
                .filter(|(b, _)| b == by)
                .nth(nth)
                .unwrap_or_else(|| panic!("{preset}: nothing predicted before {by:?}"));
            // What ld.so tried is in the prediction, in its order. The prediction may hold
            // more: ld.so skips a directory it already found missing, which the model,
            // asked about each load alone, tries again. (The scratch dirs differ.)
            let masked = |paths: &[String]| -> Vec<String> {
                paths
                    .iter()
                    .map(|p| p[p.find("/lab/").unwrap_or(0)..].to_string())
                    .collect()
            };
            let mut predicted_paths = masked(&prediction.1).into_iter();
            for path in masked(tried) {
                assert!(
                    predicted_paths.any(|p| p == path),
                    "{preset}: {by:?}: observed {tried:?}, predicted {:?}",
                    prediction.1
                );
            }
        }
    }
}

/// Python with the CUDA shim already loaded: after the gate opens it calls cuInit, dlopens the
/// NVML shim and calls nvmlInit_v2, then keeps calling cuInit and stat until `stop` exists.
const SHIM_USER: &str = "\
import ctypes, os, sys
cuda = ctypes.CDLL(sys.argv[1])
print('ready', flush=True)
sys.stdin.readline()
print('cuInit=%d' % cuda.cuInit(0), flush=True)
nvml = ctypes.CDLL(sys.argv[2])
print('nvmlInit_v2=%d' % nvml.nvmlInit_v2(), flush=True)
n = 0
while not os.path.exists(sys.argv[3]):
    os.stat('/')
    if cuda.cuInit(0) != 0:
        sys.exit('cuInit failed')
    n += 1
print('rounds=%d' % n, flush=True)
";

/// `python3 -c SCRIPT ARGS`, once it has printed `ready` (and waits for a line on its stdin):
/// the process and its stdout. Its stderr goes nowhere shared (under CI the test's own is a
/// file, which the tracer would follow).
fn held_python(
    script: &str,
    args: &[&std::ffi::OsStr],
) -> (Child, std::io::BufReader<ChildStdout>) {
    let mut python = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(python.stdout.take().unwrap());
    assert_eq!(read_line(&mut out), "ready\n");
    (python, out)
}

fn read_line(out: &mut std::io::BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(out, &mut line).unwrap();
    line
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_shim_mapped_before_attach_and_one_loaded_after_are_both_seen_and_the_process_outlives_the_tracer()
 {
    let _serial = serial();
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let dir = temp_dir("attach-shims");
        let stop = dir.path().join("stop");
        let (cuda, nvml) = (fixture("libvgpu_cuda.so"), fixture("libvgpu_nvml.so"));
        let (mut user, mut out) = held_python(
            SHIM_USER,
            &[cuda.as_os_str(), nvml.as_os_str(), stop.as_os_str()],
        );
        let file = temp_file("attach-shims");
        let args = ["--format", "jsonl", "-o", file.to_str().unwrap()];
        let (tracer, stderr) = attach("ptrace", &args, user.id());
        user.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert_eq!(read_line(&mut out), "cuInit=0\n");
        assert_eq!(read_line(&mut out), "nvmlInit_v2=0\n");
        // Until the trace shows the loop's calls, then the tracer is stopped mid-loop.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(&file).map_or(0, |t| t.matches("\"cuInit\"").count()) < 50 {
            assert!(
                Instant::now() < deadline,
                "{signal}: the loop's calls not seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(tracer.id() as i32), signal).unwrap();
        let mut tracer = tracer;
        tracer.wait().unwrap();
        let stderr = stderr.join().unwrap();
        // Unharmed: it goes on calling into the shim, then ends as it means to.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&stop, "").unwrap();
        let rest = {
            let mut text = String::new();
            out.read_to_string(&mut text).unwrap();
            text
        };
        assert!(user.wait().unwrap().success(), "{signal}: {rest} {stderr}");
        assert!(rest.starts_with("rounds="), "{signal}: {rest}");
        let trace = Trace::read(&file);
        let first = trace
            .of_type("api")
            .find(|a| a["function"] == "cuInit")
            .unwrap_or_else(|| panic!("{signal}: the mapped shim's cuInit: {stderr}"));
        assert_eq!(first["result"], "CUDA_SUCCESS");
        let load = trace
            .of_type("load")
            .find(|l| l["name"] == "libvgpu_nvml.so")
            .unwrap_or_else(|| panic!("{signal}: the NVML shim's load: {stderr}"));
        assert_eq!(load["linked"], true);
        assert_eq!(load["during"], fixture("libvgpu_nvml.so").to_str().unwrap());
        let init: Vec<&Value> = trace
            .of_type("api")
            .filter(|a| a["function"] == "nvmlInit_v2")
            .collect();
        assert_eq!(init.len(), 1, "{signal}");
        assert_eq!(init[0]["result"], "NVML_SUCCESS");
        // What it printed to its stdout, a pipe, through the C library's write().
        assert!(
            trace
                .of_type("log")
                .any(|l| l["stream"] == "stdout" && l["text"] == "nvmlInit_v2=0"),
            "{signal}"
        );
        if signal == nix::sys::signal::Signal::SIGINT {
            assert!(stderr.contains("detached from"), "{stderr}");
            trace.assert_nothing_lost();
        }
    }
}

/// Writes of a Go runtime are not seen, so a process's output is read where it lands: here
/// the file its stderr is open on, from attach on (as writes would be).
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn output_to_a_file_is_read_from_the_file() {
    let _serial = serial();
    let dir = temp_dir("attach-output");
    let gate = Gate::new(dir.path());
    let log = dir.path().join("serve.log");
    let script = format!(
        "exec 2>>'{log}'; \
         echo 'time=2026-12-06T10:00:00.000Z level=INFO msg=\"discovering available GPUs...\"' >&2; \
         read go < '{gate}'; \
         echo 'time=2026-12-06T10:00:01.000Z level=INFO msg=\"inference compute\" id=cpu library=cpu' >&2; \
         sleep 0.5",
        log = log.display(),
        gate = gate.0.display()
    );
    let mut shell = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    // Until its stderr is the file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("discovering")) {
        assert!(Instant::now() < deadline, "the shell did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let file = temp_file("attach-output");
    let args = ["--format", "jsonl", "-o", file.to_str().unwrap()];
    let (mut tracer, stderr) = attach("ptrace", &args, shell.id());
    gate.open();
    assert!(shell.wait().unwrap().success());
    assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
    let stderr = stderr.join().unwrap();
    assert!(
        stderr.contains(&format!(
            "their output is read from /proc/{}/root",
            shell.id()
        )) && stderr.contains("serve.log"),
        "{stderr}"
    );
    let says: Vec<String> = Trace::read(&file)
        .of_type("log")
        .filter(|l| l["stream"] == "file")
        .filter_map(|l| Some(l["ollama"]["says"].as_str()?.to_string()))
        .collect();
    // The line from before attach is the file's past, not traced.
    assert_eq!(says, ["inference-compute"], "{stderr}");
}

/// musl's loader is its C library and keeps the same rendezvous: dl-libc exec'd after attach,
/// built for glibc then for musl, has its shim's load seen, with the same calls and verdict.
#[test]
#[ignore = "needs root, a BPF-capable kernel and musl-tools (cargo xtask test installs it)"]
fn a_musl_program_attached_gives_the_load_calls_and_verdict_of_glibc() {
    let _serial = serial();
    let mut shapes = Vec::new();
    for cc in ["cc", "musl-gcc"] {
        let dir = temp_dir(&format!("attach-libc-{cc}"));
        let (program, shim) = build_dl_libc(dir.path(), &[cc], None);
        let gate = Gate::new(dir.path());
        let mut shell = gate.shell(&format!("'{}' '{}'", program.display(), shim.display()));
        let file = temp_file("attach-libc");
        let args = ["--format", "jsonl", "-o", file.to_str().unwrap()];
        let (mut tracer, stderr) = attach("ptrace", &args, shell.id());
        gate.open();
        assert!(shell.wait().unwrap().success(), "{cc}");
        assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
        let stderr = stderr.join().unwrap();
        let trace = Trace::read(&file);
        let load = trace
            .of_type("load")
            .find(|l| l["name"] == "libcuda.so.1")
            .unwrap_or_else(|| panic!("{cc}: the shim's load: {stderr}"));
        assert_eq!(load["linked"], true, "{cc}");
        assert_eq!(load["during"], shim.to_str().unwrap(), "{cc}");
        trace.assert_nothing_lost();
        shapes.push(libc_shape(&trace));
    }
    assert_eq!(shapes[0].2, "shim-used", "{:?}", shapes[0]);
    assert_eq!(shapes[0], shapes[1]);
}

/// Every write() stops at the C library's breakpoint, whatever its fd: a process writing a
/// file in small pieces has it taken out once it passes a thousand a second, and runs on.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_process_that_writes_often_is_no_longer_stopped_at_its_writes() {
    let _serial = serial();
    let dir = temp_dir("attach-writes");
    let script = "\
import os, sys
print('ready', flush=True)
sys.stdin.readline()
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
for _ in range(100000):
    os.write(fd, b'x')
print('wrote=%d' % os.fstat(fd).st_size, flush=True)
";
    let written = dir.path().join("out");
    let (mut writer, mut out) = held_python(script, &[written.as_os_str()]);
    let file = temp_file("attach-writes");
    let args = ["--format", "jsonl", "-o", file.to_str().unwrap()];
    let (mut tracer, stderr) = attach("ptrace", &args, writer.id());
    writer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(read_line(&mut out), "wrote=100000\n");
    assert!(writer.wait().unwrap().success());
    assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
    let stderr = stderr.join().unwrap();
    assert!(
        stderr.contains(&format!(
            "process {} calls write() over 1000 times a second",
            writer.id()
        )),
        "{stderr}"
    );
    // Writes to a file are no output, and after the cut none is seen.
    let trace = Trace::read(&file);
    assert_eq!(trace.of_type("log").count(), 0, "{stderr}");
    trace.assert_nothing_lost();
}
