//! The lab against the real thing: the real Ollama v0.32.15 (../shared/real-ollama: release
//! layout, cuda_v12 only) and the lab's stand-in, each traced from the kernel starting `ollama
//! serve`, must show the same discovery. Each trace is reduced to a shape: serve's children in
//! order (argv, library path environment, how each ended), what each dlopens and dlsyms, the
//! order of its CUDA and NVML calls, the log lines that carry the decision, and the verdict.
//! Where the two differ on purpose, the reduction says why where it normalises.
//!
//! The lab runs era D in the tarball layout: v0.32.15's discover/ is v0.33.0-rc2's but for
//! comments, and era D models v0.33.0-rc2 (era C models v0.30.0, whose driver floor differs). The
//! real copy ships only cuda_v12, so the lab's cuda_v13 and vulkan dirs are removed before serve
//! starts (the official v0.32.15 release ships them, as era D does).
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::ollama::*;
use common::*;

/// How to write the two installations' own paths, so that the shapes compare.
struct Paths {
    /// The dir holding bin/ollama and lib/ollama.
    root: PathBuf,
    /// The shims' dir (installed whether or not serve's environment names it).
    shims: PathBuf,
}

impl Paths {
    fn new(root: &Path, shims: &Path) -> Self {
        Self {
            root: std::fs::canonicalize(root).unwrap(),
            shims: std::fs::canonicalize(shims).unwrap(),
        }
    }

    fn normalise(&self, text: &str) -> String {
        text.replace(self.shims.to_str().unwrap(), "$SHIMS")
            .replace(self.root.to_str().unwrap(), "$ROOT")
    }
}

/// One child of serve.
#[derive(Debug, PartialEq)]
struct Child {
    /// `llama-server --port N ...`; `fork` for one that never execs.
    argv: String,
    /// LD_LIBRARY_PATH and GGML_BACKEND_PATH, paths normalised, serve's own LD_LIBRARY_PATH as
    /// `$SERVE`.
    env: Vec<String>,
    /// `file(mode) = ok` for every dlopen, in order; the CPU variants as one entry.
    dlopens: Vec<String>,
    /// The names dlsym was asked for, in order, repeats in a row once.
    dlsyms: Vec<String>,
    /// The CUDA and NVML calls, in order, repeats in a row once.
    api: Vec<String>,
    /// The lines of output that carry a conclusion.
    logs: Vec<String>,
    /// `exit 0`, `signal 9`.
    ended: String,
}

#[derive(Debug, PartialEq)]
struct Shape {
    serve_argv: String,
    serve_library_path: String,
    /// serve's log lines about discovery (time and memory figures left out).
    serve_logs: Vec<String>,
    children: Vec<Child>,
    verdict: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn env_var(exec: &Value, key: &str) -> Option<String> {
    strings(&exec["env"])
        .into_iter()
        .find_map(|e| e.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Consecutive repeats once: the real runtime asks `cuGetProcAddress_v2` about 400 times (every
/// entry point it knows), the lab's for the 11 it calls; the order is what counts.
fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.dedup();
    v
}

/// `0.00.075.098 E text` (llama.cpp's logger) → `E text`.
fn strip_common_log_time(line: &str) -> String {
    match line.split_once(' ') {
        Some((time, rest))
            if time.split('.').count() == 4
                && time.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            rest.to_string()
        }
        _ => line.to_string(),
    }
}

/// A child's line of output, if it carries a conclusion, normalised.
fn child_log(paths: &Paths, line: &str) -> Option<String> {
    let line = paths.normalise(&strip_common_log_time(line));
    if line.contains("common_params_print_info: build ") {
        // The build's own name and compiler.
        return Some(line.split(" build ").next().unwrap().to_string() + " build …");
    }
    if let Some((before, _)) = line.split_once("CUDA : ARCHS = ") {
        // The real copy is built for sm_90 only (../shared/real-ollama); the lab's cuda_v12
        // lists the release's architectures.
        let after = line.split_once(" | USE_GRAPHS").map_or("", |(_, a)| a);
        return Some(format!("{before}CUDA : ARCHS = … | USE_GRAPHS{after}"));
    }
    Some(line)
}

/// serve's slog lines, less the work the lab's serve does not do (the API server, models, the
/// cloud), with their time and the memory figures (this machine's, at that moment) left out.
fn serve_log(line: &str) -> Option<String> {
    const ELSEWHERE: [&str; 10] = [
        "msg=\"server config\"",
        "msg=\"Ollama cloud disabled",
        "msg=\"total blobs",
        "msg=\"total unused blobs removed",
        "msg=\"Listening on ",
        "msg=\"model list cache",
        "msg=\"model show cloud cache",
        "msg=\"model recommendations",
        "msg=\"vram-based default context\"",
        "msg=\"starting model list cache\"",
    ];
    let rest = line.strip_prefix("time=")?.split_once(' ')?.1;
    if ELSEWHERE.iter().any(|m| rest.contains(m)) {
        return None;
    }
    Some(match rest.split_once(" total=") {
        Some((before, _)) => format!("{before} total=… available=…"),
        None => rest.to_string(),
    })
}

fn reduce(trace: &Trace, paths: &Paths) -> Shape {
    let lines = &trace.lines;
    let serve = trace
        .of_type("exec")
        .find(|e| strings(&e["argv"]).iter().any(|a| a == "serve"))
        .expect("serve's exec");
    let serve_pid = &serve["pid"];
    let serve_argv: Vec<String> = strings(&serve["argv"])
        .into_iter()
        // The lab's one `ollama` plays every era: `serve --era d`.
        .take_while(|a| a != "--era")
        .map(|a| paths.normalise(&a))
        .collect();
    let serve_path = env_var(serve, "LD_LIBRARY_PATH").unwrap_or_default();
    let serve_logs = lines
        .iter()
        .filter(|l| l["type"] == "log" && &l["pid"] == serve_pid)
        .filter_map(|l| serve_log(l["text"].as_str()?))
        .map(|l| paths.normalise(&l))
        .collect();
    let spawned: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "spawn" && &l["pid"] == serve_pid)
        .map(|l| &l["child"])
        .collect();
    let children = spawned
        .iter()
        .map(|pid| child(trace, pid, paths, &serve_path))
        .collect();
    let verdict = &trace.summary()["verdict"];
    let text = verdict["text"].as_str().unwrap_or_default();
    // pid 20523 (llama-server, ...) → pid N (llama-server, ...)
    let text = match text.strip_prefix("pid ") {
        Some(rest) => format!(
            "pid N{}",
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
        ),
        None => text.to_string(),
    };
    Shape {
        serve_argv: serve_argv.join(" "),
        serve_library_path: paths.normalise(&serve_path),
        serve_logs,
        children,
        verdict: format!(
            "{}: {}",
            verdict["outcome"].as_str().unwrap_or_default(),
            paths.normalise(&text)
        ),
    }
}

fn child(trace: &Trace, pid: &Value, paths: &Paths, serve_path: &str) -> Child {
    let mut mine: Vec<&Value> = trace.lines.iter().filter(|l| &l["pid"] == pid).collect();
    mine.sort_by_key(|l| l["ts_ns"].as_u64());
    let exec = mine.iter().find(|l| l["type"] == "exec");
    let argv = match exec {
        None => "fork".to_string(),
        Some(exec) => {
            let argv = strings(&exec["argv"]);
            let mut shown = vec![base(&argv[0]).to_string()];
            let mut after_port = false;
            for a in &argv[1..] {
                // The port is chosen at random.
                shown.push(if after_port {
                    "N".into()
                } else {
                    paths.normalise(a)
                });
                after_port = a == "--port";
            }
            shown.join(" ")
        }
    };
    let env = exec
        .map(|exec| {
            ["LD_LIBRARY_PATH", "GGML_BACKEND_PATH"]
                .iter()
                .filter_map(|key| {
                    let value = env_var(exec, key)?;
                    let value = match value.strip_suffix(serve_path) {
                        Some(head) if !serve_path.is_empty() => format!("{head}$SERVE"),
                        _ => value,
                    };
                    Some(format!("{key}={}", paths.normalise(&value)))
                })
                .collect()
        })
        .unwrap_or_default();
    // What the libraries libggml-cuda.so brings along do while it is being opened: the real
    // one needs cuBLAS, whose constructors dlopen libcuda.so.1 (RTLD_LAZY) and dlsym dozens of
    // driver functions; the lab's backend has no cuBLAS.
    let inside_backend: Vec<(u64, u64)> = mine
        .iter()
        .filter(|l| l["type"] == "call" && l["func"] == "dlopen")
        .filter(|l| {
            l["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("/libggml-cuda.so"))
        })
        .filter_map(|l| {
            let start = l["ts_ns"].as_u64()?;
            Some((start, start + l["duration_ns"].as_u64()?))
        })
        .collect();
    let nested = |l: &Value| {
        let ts = l["ts_ns"].as_u64().unwrap_or(0);
        inside_backend.iter().any(|(a, b)| ts > *a && ts < *b)
    };
    let calls: Vec<&Value> = mine
        .iter()
        .copied()
        .filter(|l| l["type"] == "call" && !nested(l))
        .collect();
    let mut dlopens: Vec<String> = Vec::new();
    let mut variants: Vec<String> = Vec::new();
    let flush = |variants: &mut Vec<String>, dlopens: &mut Vec<String>| {
        if variants.is_empty() {
            return;
        }
        // ggml opens every CPU variant to score it, in directory order, then the best again.
        let kept = variants.last().unwrap().clone();
        let mut all: Vec<String> = variants[..variants.len() - 1].to_vec();
        all.sort();
        dlopens.push(format!(
            "libggml-cpu-{{{}}} scored, {kept} kept",
            all.join(",")
        ));
        variants.clear();
    };
    for c in calls.iter().filter(|c| c["func"] == "dlopen") {
        let name = base(c["name"].as_str().unwrap_or_default());
        if let Some(variant) = name
            .strip_prefix("libggml-cpu-")
            .and_then(|v| v.strip_suffix(".so"))
        {
            variants.push(variant.to_string());
            continue;
        }
        flush(&mut variants, &mut dlopens);
        let result = if c["ok"] == true {
            "ok".to_string()
        } else {
            paths.normalise(c["error"].as_str().unwrap_or("failed"))
        };
        dlopens.push(format!("{name}({}) = {result}", c["mode"]));
    }
    flush(&mut variants, &mut dlopens);
    let dlsyms = dedup(
        calls
            .iter()
            .filter(|c| c["func"] == "dlsym")
            .filter_map(|c| c["name"].as_str())
            // The C library's own, looked up by the lab's Rust runtime (the real is Go).
            .filter(|n| !n.starts_with("__"))
            .map(str::to_string)
            .collect(),
    );
    let api = dedup(
        mine.iter()
            .filter(|l| l["type"] == "api" && !nested(l))
            .map(|l| {
                let f = l["function"].as_str().unwrap_or_default();
                match l["values"]["attribute"].as_u64() {
                    Some(attribute) => format!("{f}({attribute})"),
                    None => f.to_string(),
                }
            })
            .collect(),
    );
    // Per stream: llama.cpp's logger writes stderr from a thread of its own, so how its lines
    // fall among stdout's is a race.
    let mut logs: Vec<String> = Vec::new();
    for stream in ["stdout", "stderr"] {
        let mut lines = Vec::new();
        for l in mine
            .iter()
            .filter(|l| l["type"] == "log" && l["stream"] == stream)
        {
            let Some(line) = child_log(paths, l["text"].as_str().unwrap_or_default()) else {
                continue;
            };
            let done = line.contains("system_info:");
            lines.push(format!("{stream}: {line}"));
            // Ollama kills the server at its system_info line; what else it prints before the
            // signal lands is a race.
            if done && argv.contains("--port") {
                break;
            }
        }
        // That logger thread may not flush its last line before the process exits: the real
        // `llama-server --list-devices` printed its second `load_backend` error in 28 of 30
        // runs, untraced. A line repeated is counted once on both sides.
        logs.extend(match stream {
            "stderr" => dedup(lines),
            _ => lines,
        });
    }
    let ended = mine
        .iter()
        .find(|l| l["type"] == "exit")
        .map_or("running".into(), |e| match e["signal"].as_u64() {
            Some(signal) => format!("signal {signal}"),
            None => format!("exit {}", e["code"]),
        });
    Child {
        argv,
        env,
        dlopens,
        dlsyms,
        api,
        logs,
        ended,
    }
}

/// The real serve with `library_path` as its LD_LIBRARY_PATH, recorded until it concludes.
fn record_real(ollama: &RealOllama, serve_dir: &Serve, library_path: &Path) -> Trace {
    let mut env = serve_dir.env();
    env.push(("LD_LIBRARY_PATH".into(), library_path.into()));
    let command: Vec<OsString> = vec![ollama.ollama().into(), "serve".into()];
    let (trace, _) = record_until_concluded(&command, &env);
    trace.assert_nothing_lost();
    trace
}

/// The shape of the lab's `preset`, set up in a scratch dir of its own and recorded.
fn lab_shape(preset: &str) -> Shape {
    let scratch = temp_dir(&format!("lab-vs-real-{preset}"));
    let lab = record_lab(preset, scratch.path());
    let root = scratch.path();
    reduce(
        &lab,
        &Paths::new(&root.join("usr/local"), &root.join("opt/vgpu/lib")),
    )
}

/// The lab's `preset` in era D's tarball layout, cut to the real copy's one GPU dir, its serve
/// recorded with the environment `vgpu-lab setup` gives it.
fn record_lab(preset: &str, scratch: &Path) -> Trace {
    let out = Command::new(fixture("vgpu-lab"))
        .args(["setup", preset])
        .arg(scratch)
        .args(["--era", "d", "--layout", "tarball"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lib = scratch.join("usr/local/lib/ollama");
    for dir in ["cuda_v13", "vulkan"] {
        std::fs::remove_dir_all(lib.join(dir)).unwrap();
    }
    let file = temp_file(&format!("lab-vs-real-{preset}"));
    let mut cmd = tracer();
    cmd.arg("record")
        .arg("-o")
        .arg(&file)
        .arg("--")
        .arg(scratch.join("usr/local/bin/ollama"))
        .args(["serve", "--era", "d"]);
    // As `vgpu-lab run` does: nothing inherited that would change what the preset means.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "LD_LIBRARY_PATH"
            || key == "LD_PRELOAD"
            || key == "CUDA_VISIBLE_DEVICES"
            || key.starts_with("GGML_")
            || key.starts_with("OLLAMA_")
            || (key.starts_with("VGPU_") && key != "VGPU_TRACE_BACKEND")
        {
            cmd.env_remove(&*key);
        }
    }
    let out = cmd.envs(&env).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let trace = Trace::read(&file);
    trace.assert_nothing_lost();
    trace
}

/// Both shapes, and where they differ, child by child.
fn assert_same(lab: &Shape, real: &Shape) {
    if lab == real {
        return;
    }
    let mut why = String::new();
    for (i, (l, r)) in lab.children.iter().zip(&real.children).enumerate() {
        if l != r {
            why += &format!("child {i}:\n  lab:  {l:#?}\n  real: {r:#?}\n");
        }
    }
    panic!("the lab's discovery is not the real one's\n{why}\nlab:  {lab:#?}\nreal: {real:#?}");
}

/// With the reference shims (emulating) on serve's LD_LIBRARY_PATH, the real libcudart asks for
/// the driver's export tables, which the shim cannot give, and Ollama ends on the CPU: the lab's
/// `cudart-export-tables` preset.
#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn with_the_emulating_shim_the_lab_discovers_as_the_real_ollama() {
    let Some(ollama) =
        RealOllama::find("with_the_emulating_shim_the_lab_discovers_as_the_real_ollama")
    else {
        return;
    };
    let _serial = serial();
    let serve_dir = Serve::new();
    let shims = serve_dir.dir.path().join("opt/vgpu/lib");
    install_shims(&shims);
    let real = record_real(&ollama, &serve_dir, &shims);
    let real = reduce(&real, &Paths::new(&ollama.root, &shims));

    let lab = lab_shape("cudart-export-tables");
    assert_same(&lab, &real);
    // What the shape must be, whichever side is wrong.
    assert_eq!(
        real.children
            .iter()
            .map(|c| c.argv.as_str())
            .collect::<Vec<_>>(),
        [
            "fork",
            "llama-server --port N --host 127.0.0.1 --no-webui --offline --verbose",
            "llama-server --list-devices --offline --verbose",
            "ollama gpu-discover --lib-dir $ROOT/lib/ollama --lib-dir $ROOT/lib/ollama/cuda_v12",
        ]
    );
    assert!(
        real.verdict.starts_with("init-failed: ") && real.verdict.contains("cuGetExportTable"),
        "{}",
        real.verdict
    );
}

/// With no driver and no shim anywhere: every child fails to load the CUDA backend, and
/// gpu-discover exits 1 after trying libcuda.so.1 and libcuda.so: the lab's `shim-off-path`.
#[test]
#[ignore = "needs root, a BPF-capable kernel and the real Ollama (cargo xtask test runs it)"]
fn with_no_driver_the_lab_discovers_as_the_real_ollama() {
    let Some(ollama) = RealOllama::find("with_no_driver_the_lab_discovers_as_the_real_ollama")
    else {
        return;
    };
    let _serial = serial();
    let serve_dir = Serve::new();
    // Installed, but named by nothing serve sees (as the preset has it).
    let shims = serve_dir.dir.path().join("opt/vgpu/lib");
    install_shims(&shims);
    let real = record_real(&ollama, &serve_dir, Path::new(""));
    let real = reduce(&real, &Paths::new(&ollama.root, &shims));

    let lab = lab_shape("shim-off-path");
    assert_same(&lab, &real);
    let discover = real.children.last().unwrap();
    assert_eq!(discover.ended, "exit 1", "{discover:#?}");
    assert!(real.verdict.starts_with("not-found: "), "{}", real.verdict);
}
