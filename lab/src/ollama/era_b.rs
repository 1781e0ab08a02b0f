//! Era B (v0.12.4 – v0.24): discovery in short-lived `ollama runner --ollama-engine --port P`
//! children, one per GPU library dir, polled on `GET /info` and killed once they answer; then a
//! second pass per CUDA device with GGML_CUDA_INIT=1 and CUDA_VISIBLE_DEVICES=<uuid> (v0.13.2+).
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::child::{self, free_port};
use super::device::{DeviceInfo, Gpu};
use super::{Install, discovery_timeout};
use crate::http::{self, GetError};
use crate::slog::{self, Level};

/// `lib/ollama/*/*ggml-*`, parent dirs, vulkan only with OLLAMA_VULKAN=1.
pub(super) fn gpu_lib_dirs(install: &Install) -> Vec<String> {
    let mut dirs = ggml_dirs(install);
    dirs.sort();
    if std::env::var("OLLAMA_VULKAN").as_deref() != Ok("1")
        && dirs.iter().any(|d| d.ends_with("/vulkan"))
    {
        dirs.retain(|d| !d.ends_with("/vulkan"));
        slog::log(
            Level::Info,
            "runner.go:80",
            "experimental Vulkan support disabled.  To enable, set OLLAMA_VULKAN=1",
            &[],
        );
    }
    dirs
}

/// The subdirs of lib/ollama holding a `*ggml-*` file, in directory order.
pub(super) fn ggml_dirs(install: &Install) -> Vec<String> {
    std::fs::read_dir(&install.lib_ollama)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().contains("ggml-"))
        })
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect()
}

pub fn discover(install: &Install) -> Vec<Gpu> {
    slog::log(
        Level::Info,
        "runner.go:67",
        "discovering available GPUs...",
        &[],
    );
    let lib_ollama = install.lib_ollama.to_string_lossy().into_owned();
    let timeout = discovery_timeout(Duration::from_secs(30));
    let mut found: Vec<DeviceInfo> = Vec::new();
    for dir in gpu_lib_dirs(install) {
        let paths = vec![lib_ollama.clone(), dir];
        if let Ok(devices) = run_runner(install, &paths, &[], Instant::now() + timeout) {
            found.extend(devices);
        }
    }
    // Second pass: every CUDA device must really initialise, in parallel under one deadline.
    let deadline = Instant::now() + timeout;
    let checks: Vec<_> = found
        .into_iter()
        .map(|dev| {
            let install_exe = install.exe.clone();
            let lib_ollama = install.lib_ollama.clone();
            std::thread::spawn(move || {
                let install = Install {
                    exe: install_exe,
                    lib_ollama,
                };
                let extra = [
                    ("GGML_CUDA_INIT", "1".to_string()),
                    ("CUDA_VISIBLE_DEVICES", dev.id.clone()),
                ];
                let ok = dev.backend != "CUDA"
                    || run_runner(&install, &dev.library_path, &extra, deadline)
                        .is_ok_and(|d| !d.is_empty());
                (dev, ok)
            })
        })
        .collect();
    let mut gpus = Vec::new();
    for check in checks {
        let Ok((dev, ok)) = check.join() else {
            continue;
        };
        if ok {
            gpus.push(dev.into_gpu());
        } else {
            slog::log(
                Level::Debug,
                "runner.go:154",
                "filtering device which didn't fully initialize",
                &[
                    ("id", dev.id.clone()),
                    (
                        "libdir",
                        dev.library_path.last().cloned().unwrap_or_default(),
                    ),
                    ("pci_id", dev.pci_id.clone()),
                    ("library", dev.backend.clone()),
                ],
            );
        }
    }
    gpus
}

/// Starts one runner, polls `/info` every 10 ms until `deadline`, then kills it.
fn run_runner(
    install: &Install,
    lib_paths: &[String],
    extra: &[(&str, String)],
    deadline: Instant,
) -> Result<Vec<DeviceInfo>, String> {
    let port = free_port();
    let mut cmd = Command::new(&install.exe);
    cmd.args(["runner", "--ollama-engine", "--port", &port.to_string()])
        .env("LD_LIBRARY_PATH", child::library_path(lib_paths))
        .env("OLLAMA_LIBRARY_PATH", lib_paths.join(":"))
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if !child::trace_output() {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    slog::log(
        Level::Info,
        "server.go:392",
        "starting runner",
        &[("cmd", child::command_line(&cmd))],
    );
    let mut runner = child::start(&mut cmd).map_err(|e| e.to_string())?;
    // Ollama reports a failure only when the runner had to be killed or died of a signal;
    // a runner that exits on its own is a trace-level "runner exited".
    let (result, reportable) = loop {
        if let Ok(Some(status)) = runner.try_wait() {
            let error = format!("runner exited before answering: {status}");
            break (Err(error), status.code().is_none());
        }
        if Instant::now() >= deadline {
            break (
                Err("failed to finish discovery before timeout".to_string()),
                true,
            );
        }
        match http::get(port, "/info", deadline) {
            Ok((200, body)) => {
                break (
                    serde_json::from_str::<Vec<DeviceInfo>>(&body).map_err(|e| e.to_string()),
                    false,
                );
            }
            Ok((404, _)) => {
                break (
                    Err("llamarunner free vram reporting not supported".to_string()),
                    false,
                );
            }
            Ok((status, _)) => break (Err(format!("unexpected status {status}")), false),
            Err(GetError::NotReady) => std::thread::sleep(Duration::from_millis(10)),
            Err(GetError::TimedOut) => {
                break (
                    Err("failed to finish discovery before timeout".to_string()),
                    true,
                );
            }
            Err(GetError::Failed(e)) => break (Err(e), false),
        }
    };
    child::kill(&mut runner);
    if let Err(error) = &result {
        let extra_envs: Vec<String> = extra.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let level = if reportable {
            Level::Info
        } else {
            Level::Debug
        };
        let msg = if reportable {
            "failure during GPU discovery"
        } else {
            "runner exited"
        };
        slog::log(
            level,
            "runner.go:464",
            msg,
            &[
                ("OLLAMA_LIBRARY_PATH", format!("[{}]", lib_paths.join(" "))),
                ("extra_envs", format!("map[{}]", extra_envs.join(" "))),
                ("error", error.clone()),
            ],
        );
    }
    result
}
