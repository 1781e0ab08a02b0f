//! The real Ollama (v0.32.15, release layout, CUDA 12 backend; see ../shared/real-ollama),
//! traced from the kernel on a machine without a GPU: `record -- ollama serve` and `attach
//! ollama`, each until Ollama logs its conclusion, with the reference shims where shim authors
//! put them (serve's LD_LIBRARY_PATH, /etc/ld.so.conf.d, a container's
//! /usr/lib/x86_64-linux-gnu) and with no shim at all. Each trace must show what really
//! happened, and its verdict must agree with the conclusion Ollama logged.
use std::ffi::OsString;

mod common;
use common::ollama::*;
use common::*;

fn serve(ollama: &RealOllama) -> Vec<OsString> {
    vec![ollama.ollama().into(), "serve".into()]
}

#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn serve_with_the_shims_on_its_library_path() {
    let Some(ollama) = RealOllama::find("serve_with_the_shims_on_its_library_path") else {
        return;
    };
    let _serial = serial();
    let serve_dir = Serve::new();
    let shims = serve_dir.dir.path().join("opt/vgpu/lib");
    install_shims(&shims);
    let mut env = serve_dir.env();
    env.push(("LD_LIBRARY_PATH".into(), shims.clone().into()));
    let (trace, shown) = record_until_concluded(&serve(&ollama), &env);
    assert_real_discovery(&trace, &ollama);
    assert_shim_refused_by_cudart(&trace, &shims, &shown);
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn serve_with_no_shim_at_all() {
    let Some(ollama) = RealOllama::find("serve_with_no_shim_at_all") else {
        return;
    };
    let _serial = serial();
    let serve_dir = Serve::new();
    let (trace, _) = record_until_concluded(&serve(&ollama), &serve_dir.env());
    assert_real_discovery(&trace, &ollama);
    assert!(driver_loads(&trace).is_empty());
    let lib = ollama.lib();
    let failed: Vec<(u64, &str, &str)> = trace
        .of_type("call")
        .filter(|c| c["func"] == "dlopen" && c["ok"] == false)
        .map(|c| {
            let error = c["error"].as_str().unwrap_or("");
            (
                c["pid"].as_u64().unwrap(),
                c["name"].as_str().unwrap(),
                error,
            )
        })
        .collect();
    // Each child fails to open the CUDA backend for want of its DT_NEEDED driver (the
    // --list-devices one twice: ggml loads all its backends twice there).
    let backend = format!("{}/cuda_v12/libggml-cuda.so", lib.display());
    let mut failing: Vec<u64> = failed
        .iter()
        .filter(|(_, name, error)| {
            *name == backend
                && error.ends_with(
                    "libcuda.so.1: cannot open shared object file: No such file or directory",
                )
        })
        .map(|(pid, ..)| *pid)
        .collect();
    failing.dedup();
    assert_eq!(failing.len(), 3, "{failed:?}");
    // gpu-discover asks for the driver by both names, and gives up.
    for name in ["libcuda.so.1", "libcuda.so"] {
        assert!(failed.iter().any(|(_, n, _)| *n == name), "{failed:?}");
    }
    let discover_exit = trace
        .of_type("exit")
        .find(|e| {
            e["comm"] == "ollama"
                && trace
                    .of_type("exec")
                    .any(|x| x["pid"] == e["pid"] && x["argv"][1] == "gpu-discover")
        })
        .expect("gpu-discover's exit");
    assert_eq!(discover_exit["code"], 1);
    let (outcome, text) = verdict(&trace);
    assert_eq!(outcome, "not-found", "{text}");
    assert!(
        text.contains(
            "dlopen(libggml-cuda.so) failed: libcuda.so.1: cannot open shared object file"
        ) && text.contains("; Ollama reported library=cpu (its log: load_backend: failed to load"),
        "{text}"
    );
    trace.assert_nothing_lost();
}

/// The shims' dir in /etc/ld.so.conf.d and ld.so.cache, as an installer that runs ldconfig
/// leaves them: done in a private mount namespace, so the host's /etc stays as it is.
#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn serve_with_the_shims_in_ld_so_conf_d() {
    let Some(ollama) = RealOllama::find("serve_with_the_shims_in_ld_so_conf_d") else {
        return;
    };
    let _serial = serial();
    let serve_dir = Serve::new();
    let root = serve_dir.dir.path();
    let shims = root.join("usr/local/vgpu/lib");
    install_shims(&shims);
    let conf_d = root.join("ld.so.conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    for entry in std::fs::read_dir("/etc/ld.so.conf.d").unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), conf_d.join(entry.file_name())).unwrap();
    }
    std::fs::write(conf_d.join("vgpu.conf"), format!("{}\n", shims.display())).unwrap();
    let cache = root.join("ld.so.cache");
    let script = format!(
        "mount --bind {conf_d} /etc/ld.so.conf.d && ldconfig -X -C {cache} && \
         mount --bind {cache} /etc/ld.so.cache && exec {ollama} serve",
        conf_d = conf_d.display(),
        cache = cache.display(),
        ollama = ollama.ollama().display(),
    );
    let command: Vec<OsString> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]
    .map(OsString::from)
    .to_vec();
    let (trace, shown) = record_until_concluded(&command, &serve_dir.env());
    assert_real_discovery(&trace, &ollama);
    assert_shim_refused_by_cudart(&trace, &shims, &shown);
    trace.assert_nothing_lost();
}

/// `attach ollama` to a running service. Ollama discovers once, when serve starts, so the
/// process the tracer attaches to is started first under the name `ollama` and holds until
/// the tracer is armed, then becomes the real serve (as a service restarted under a tracer
/// that is already watching would).
#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn attach_to_serve_by_name() {
    attach_to_serve_by_name_with("ebpf");
}

/// The same under ptrace, which stops at no system call: the runners' loads come from ld.so's
/// rendezvous in each (libcuda.so.1 a DT_NEEDED of libggml-cuda.so), the calls from
/// breakpoints, the log from its file.
#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn attach_to_serve_by_name_under_ptrace() {
    attach_to_serve_by_name_with("ptrace");
}

fn attach_to_serve_by_name_with(backend: &str) {
    let Some(ollama) = RealOllama::find(&format!("attach_to_serve_by_name ({backend})")) else {
        return;
    };
    let _serial = serial();
    let serve_dir = Serve::new();
    let root = serve_dir.dir.path();
    let shims = root.join("opt/vgpu/lib");
    install_shims(&shims);
    let gate = root.join("go");
    let log = root.join("serve.log");
    std::fs::write(&log, "").unwrap();
    let wait_then_serve = format!(
        "while [ ! -e {gate} ]; do sleep 0.05; done; exec {ollama} serve 2>>{log}",
        gate = gate.display(),
        ollama = ollama.ollama().display(),
        log = log.display(),
    );
    let service = std::process::Command::new("bash")
        .args(["-c", &format!("exec -a ollama bash -c '{wait_then_serve}'")])
        .envs(serve_dir.env())
        .env("LD_LIBRARY_PATH", &shims)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let service = KillOnDrop(service);
    let (said, trace) =
        attach_with_until_concluded(backend, &log, || std::fs::write(&gate, "").unwrap());
    assert_real_discovery(&trace, &ollama);
    assert!(
        trace
            .of_type("attached")
            .any(|a| a["pid"] == service.0.id()),
        "{said}"
    );
    // The log file is followed from the side, so the ggml line written by a child to serve's
    // stderr is there too.
    assert_shim_refused_by_cudart(&trace, &shims, "verdict: init-failed: ");
    trace.assert_nothing_lost();
}

/// A child killed when the test ends, passed or not: a service left waiting would be attached
/// to by the next test that attaches to `ollama`.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
