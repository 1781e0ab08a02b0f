//! Era C (v0.30+): per GPU library dir, three children of serve — the bundled llama-server
//! started as a server (killed once it prints `system_info:`, which carries the CUDA ARCHS),
//! `llama-server --list-devices`, and `ollama gpu-discover` (15 s) — then a second pass per
//! device with CUDA_VISIBLE_DEVICES=<index> and GGML_CUDA_INIT=1.
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::child::{self, output_with_timeout};
use super::device::{Gpu, pci_id};
use super::era_b::gpu_lib_dirs;
use super::gpu_discover::{Probe, ProbedDevice};
use super::{Install, discovery_timeout};
use crate::slog::{self, Level};

/// One round of the three children for one library dir.
pub(super) struct Pass<'a> {
    pub install: &'a Install,
    pub dir: String,
    pub extra: Vec<(&'static str, String)>,
    pub deadline: Instant,
}

/// A device line of `llama-server --list-devices`: name, description, total and free MiB.
pub(super) type Listed = (String, String, u64, u64);

/// What the three children answered: the ARCHS list, the device list, gpu-discover's probe.
pub(super) struct Answers {
    pub archs: Vec<String>,
    pub listed: Vec<Listed>,
    pub probe: Probe,
}

pub fn discover(install: &Install) -> Vec<Gpu> {
    slog::log(
        Level::Info,
        "runner.go:55",
        "discovering available GPUs...",
        &[],
    );
    let mut gpus = Vec::new();
    for dir in gpu_lib_dirs(install) {
        let deadline = Instant::now() + discovery_timeout(Duration::from_secs(15));
        let pass = Pass {
            install,
            dir: dir.clone(),
            extra: Vec::new(),
            deadline,
        };
        for gpu in pass.run().unwrap_or_default() {
            let index = gpu.id.clone();
            let deadline = Instant::now() + discovery_timeout(Duration::from_secs(15));
            let extra = vec![
                ("GGML_CUDA_INIT", "1".to_string()),
                ("CUDA_VISIBLE_DEVICES", index),
            ];
            let check = Pass {
                install,
                dir: dir.clone(),
                extra,
                deadline,
            };
            if check.list_devices().is_ok_and(|d| !d.is_empty()) {
                gpus.push(gpu);
            } else {
                log_filtered(&gpu, &dir);
            }
        }
    }
    gpus
}

/// A device its second pass did not see again is dropped, as Ollama logs it.
pub(super) fn log_filtered(gpu: &Gpu, dir: &str) {
    slog::log(
        Level::Debug,
        "runner.go:160",
        "filtering device which didn't fully initialize",
        &[
            ("id", gpu.id.clone()),
            ("libdir", dir.to_string()),
            ("pci_id", gpu.pci_id.clone()),
            ("library", gpu.library.clone()),
        ],
    );
}

impl Pass<'_> {
    fn llama_server(&self) -> Command {
        let server = self.install.lib_ollama.join("llama-server");
        let server_dir = self.install.lib_ollama.to_string_lossy().into_owned();
        let mut cmd = Command::new(&server);
        cmd.env(
            "LD_LIBRARY_PATH",
            child::library_path(&[server_dir, self.dir.clone()]),
        )
        .envs(self.extra.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
        if let Some(backend) = self.backend_path() {
            cmd.env("GGML_BACKEND_PATH", backend);
        }
        cmd
    }

    /// The first sorted `libggml-*.so*` in the GPU dir that is not base or cpu.
    fn backend_path(&self) -> Option<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("libggml-") && n.contains(".so"))
            .filter(|n| !n.starts_with("libggml-base") && !n.starts_with("libggml-cpu"))
            .collect();
        names.sort();
        names.first().map(|n| format!("{}/{n}", self.dir))
    }

    fn run(&self) -> Result<Vec<Gpu>, String> {
        self.answers()
            .map(|a| self.combine(&a.archs, &a.listed, &a.probe))
    }

    /// The three children, one after the other; a failure is logged as Ollama logs it.
    pub(super) fn answers(&self) -> Result<Answers, String> {
        let result = self.archs().and_then(|archs| {
            Ok(Answers {
                archs,
                listed: self.list_devices()?,
                probe: self.gpu_discover()?,
            })
        });
        if let Err(error) = &result {
            slog::log(
                Level::Info,
                "runner.go:570",
                "failure during llama-server GPU discovery",
                &[
                    ("OLLAMA_LIBRARY_PATH", format!("[{}]", self.dir)),
                    ("extra_envs", format!("map[{}]", self.extra_envs())),
                    ("error", error.clone()),
                ],
            );
        }
        result
    }

    fn extra_envs(&self) -> String {
        self.extra
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Child 1: the server's stderr up to `system_info:`; its `CUDA : ARCHS = ...` list.
    fn archs(&self) -> Result<Vec<String>, String> {
        let port = 49152
            + (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
                .map_or(0, |d| d.subsec_nanos() % 16383) as u16;
        let mut cmd = self.llama_server();
        cmd.args([
            "--port",
            &port.to_string(),
            "--host",
            "127.0.0.1",
            "--no-webui",
            "--offline",
            "--verbose",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        slog::log(
            Level::Info,
            "llama_server.go:60",
            "starting llama-server",
            &[("cmd", child::command_line(&cmd))],
        );
        let mut server = cmd.spawn().map_err(|e| e.to_string())?;
        let stderr = server.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if child::trace_output() {
                    eprintln!("{line}");
                }
                if line.contains("system_info:") {
                    let _ = tx.send(line);
                    return;
                }
            }
        });
        let left = self.deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left);
        child::kill(&mut server);
        match line {
            Ok(line) => Ok(parse_archs(&line)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                slog::log(
                    Level::Warn,
                    "runner.go:562",
                    "llama-server GPU discovery watchdog timed out",
                    &[
                        ("OLLAMA_LIBRARY_PATH", format!("[{}]", self.dir)),
                        ("extra_envs", format!("map[{}]", self.extra_envs())),
                        ("error", "context deadline exceeded".into()),
                    ],
                );
                Err("context deadline exceeded".into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("llama-server exited before system_info".into())
            }
        }
    }

    /// Child 2: `llama-server --list-devices`, parsed as `  CUDA0: NAME (TOTAL MiB, FREE MiB free)`.
    fn list_devices(&self) -> Result<Vec<Listed>, String> {
        let mut cmd = self.llama_server();
        cmd.args(["--list-devices", "--offline", "--verbose"]);
        let left = self.deadline.saturating_duration_since(Instant::now());
        let out = output_with_timeout(&mut cmd, left)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok(text.lines().filter_map(parse_device_line).collect())
    }

    /// Child 3: `ollama gpu-discover --lib-dir <lib/ollama> --lib-dir <dir>`.
    fn gpu_discover(&self) -> Result<Probe, String> {
        let mut cmd = Command::new(&self.install.exe);
        cmd.arg("gpu-discover")
            .arg("--lib-dir")
            .arg(&self.install.lib_ollama)
            .arg("--lib-dir")
            .arg(&self.dir)
            .envs(self.extra.iter().map(|(k, v)| (k, v)));
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(15));
        let out = output_with_timeout(&mut cmd, left)?;
        serde_json::from_slice(&out.stdout).map_err(|e| format!("gpu-discover output: {e}"))
    }

    fn combine(&self, archs: &[String], listed: &[Listed], probe: &Probe) -> Vec<Gpu> {
        let cuda_v12 = self.dir.ends_with("cuda_v12");
        let libdir = self.dir.rsplit('/').next().unwrap_or("").to_string();
        let mut gpus = Vec::new();
        for (index, (name, description, total_mib, free_mib)) in listed.iter().enumerate() {
            let Some(dev) = probe.devices.get(index) else {
                continue;
            };
            if *total_mib == 0 {
                continue;
            }
            if !compiled_for(archs, name, dev) {
                continue;
            }
            if cuda_v12 && dev.compute_major < 7 && dev.nvidia_driver_major < 570 {
                log_driver_too_old(name, dev, 570);
                continue;
            }
            gpus.push(Gpu {
                id: index.to_string(),
                library: "CUDA".into(),
                name: name.clone(),
                description: description.clone(),
                compute: (dev.compute_major, dev.compute_minor),
                driver: (dev.cuda_driver_major, dev.cuda_driver_minor),
                pci_id: if dev.device_id.is_empty() {
                    pci_id(index)
                } else {
                    dev.device_id.clone()
                },
                total: total_mib << 20,
                free: free_mib << 20,
                libdirs: vec!["ollama".into(), libdir.clone()],
            });
        }
        gpus
    }
}

/// Whether the dir's build covers the device's compute capability; logged when it does not.
pub(super) fn compiled_for(archs: &[String], name: &str, dev: &ProbedDevice) -> bool {
    let arch = format!("{}{}0", dev.compute_major, dev.compute_minor);
    if archs.contains(&arch) {
        return true;
    }
    slog::log(
        Level::Info,
        "cuda_compat.go:61",
        "skipping CUDA device — compute capability not in compiled architectures",
        &[("device", name.to_string()), ("compute", compute(dev))],
    );
    false
}

/// A device dropped for its NVIDIA driver (NVML's major version) being older than `required`.
pub(super) fn log_driver_too_old(name: &str, dev: &ProbedDevice, required: i32) {
    slog::log(
        Level::Warn,
        "cuda_compat.go:38",
        "NVIDIA driver too old",
        &[
            ("device", name.to_string()),
            ("compute", compute(dev)),
            ("driver", dev.nvidia_driver_major.to_string()),
            ("required_driver", format!("{required} or newer")),
        ],
    );
}

/// `8.6`, as Ollama logs a compute capability.
fn compute(dev: &ProbedDevice) -> String {
    format!("{}.{}", dev.compute_major, dev.compute_minor)
}

fn parse_archs(system_info: &str) -> Vec<String> {
    let Some(rest) = system_info.split("ARCHS").nth(1) else {
        return Vec::new();
    };
    let list = rest.trim_start_matches([' ', '=', ':']);
    list.split(|c: char| !(c.is_ascii_digit() || c == ','))
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// `^\s+(.+?):\s+(.+?)\s+\((\d+)\s+MiB,\s+(\d+)\s+MiB\s+free\)`
fn parse_device_line(line: &str) -> Option<Listed> {
    if !line.starts_with(char::is_whitespace) {
        return None;
    }
    let (name, rest) = line.trim_start().split_once(": ")?;
    let (description, mem) = rest.rsplit_once(" (")?;
    let (total, free) = mem.strip_suffix(" MiB free)")?.split_once(" MiB, ")?;
    Some((
        name.to_string(),
        description.trim().to_string(),
        total.trim().parse().ok()?,
        free.trim().parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llama_server_output() {
        assert_eq!(
            parse_device_line("  CUDA0: vGPU H100 80GB (81920 MiB, 81408 MiB free)"),
            Some(("CUDA0".into(), "vGPU H100 80GB".into(), 81920, 81408))
        );
        assert_eq!(parse_device_line("Available devices:"), None);
        let info = "system_info: n_threads = 2 | CPU : SSE3 = 1 | CUDA : ARCHS = 500,900,1200 | USE_GRAPHS = 1 |";
        assert_eq!(parse_archs(info), vec!["500", "900", "1200"]);
    }
}
