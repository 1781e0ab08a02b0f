//! Era C (v0.30+, modelled on v0.30.0): per GPU library dir, three children of serve — the
//! bundled llama-server started as a server (killed once it prints `system_info:`, which
//! carries the CUDA ARCHS), `llama-server --list-devices`, and `ollama gpu-discover` (15 s), all
//! three with the same environment — then the three again per device with
//! CUDA_VISIBLE_DEVICES=<index> and GGML_CUDA_INIT=1. A gpu-discover that fails costs only its
//! answers (logged at debug level); llama-server's failures fail the pass.
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::child::{self, output_with_timeout};
use super::device::{Gpu, pci_id};
use super::era_b::gpu_lib_dirs;
use super::gpu_discover::{Probe, ProbedDevice};
use super::{Era, Install, discovery_timeout};
use crate::slog::{self, Level};

/// One round of the three children for one library dir.
pub(super) struct Pass<'a> {
    pub era: Era,
    pub install: &'a Install,
    pub dir: String,
    pub extra: Vec<(&'static str, String)>,
    pub deadline: Instant,
}

/// Where a log line is in the era's Ollama: v0.30.0 (C) or v0.33.0-rc2 (D, whose discover/ is
/// v0.32.15's).
pub(super) fn source(era: Era, c: &'static str, d: &'static str) -> &'static str {
    if era == Era::C { c } else { d }
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
            era: Era::C,
            install,
            dir: dir.clone(),
            extra: Vec::new(),
            deadline,
        };
        for gpu in pass.run().unwrap_or_default() {
            let index = gpu.id.clone();
            let deadline = Instant::now() + discovery_timeout(Duration::from_secs(15));
            // ml.GetDevicesEnv, then AddInitValidation's GGML_CUDA_INIT=1 (a deep init).
            let extra = vec![
                ("CUDA_VISIBLE_DEVICES", index),
                ("GGML_CUDA_INIT", "1".to_string()),
            ];
            let check = Pass {
                era: Era::C,
                install,
                dir: dir.clone(),
                extra,
                deadline,
            };
            if check
                .answers()
                .is_ok_and(|a| a.listed.iter().any(|d| d.2 > 0))
            {
                gpus.push(gpu);
            } else {
                log_filtered(Era::C, &gpu, &dir);
            }
        }
    }
    gpus
}

/// A device its second pass did not see again is dropped, as Ollama logs it.
pub(super) fn log_filtered(era: Era, gpu: &Gpu, dir: &str) {
    slog::log(
        Level::Debug,
        source(era, "runner.go:146", "runner.go:160"),
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
        let mut cmd = Command::new(self.install.lib_ollama.join("llama-server"));
        self.env(&mut cmd);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// `llm.SetupLlamaServerCommandEnv`, which every child of a pass gets, gpu-discover too:
    /// llama-server's dir and the pass's dirs in front of LD_LIBRARY_PATH, the extra variables,
    /// and GGML_BACKEND_PATH naming the dir's GPU backend.
    fn env(&self, cmd: &mut Command) {
        let server_dir = self.install.lib_ollama.to_string_lossy().into_owned();
        cmd.env(
            "LD_LIBRARY_PATH",
            child::library_path(&[server_dir, self.dir.clone()]),
        )
        .envs(self.extra.iter().map(|(k, v)| (k, v)));
        if let Some(backend) = self.backend_path() {
            cmd.env("GGML_BACKEND_PATH", backend);
        }
    }

    /// `[lib/ollama lib/ollama/cuda_v12]`, as Go prints the pass's libDirs.
    fn lib_dirs(&self) -> String {
        format!("[{} {}]", self.install.lib_ollama.display(), self.dir)
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

    /// The three children, one after the other; a failure of llama-server is logged as Ollama
    /// logs it, one of gpu-discover only at debug level (its devices are then unknown).
    pub(super) fn answers(&self) -> Result<Answers, String> {
        let start = Instant::now();
        let result = self.archs().and_then(|archs| {
            let listed = self.list_devices()?;
            let probe = self.gpu_discover().unwrap_or_else(|(error, stderr)| {
                slog::log(
                    Level::Debug,
                    "native_probe.go:259",
                    "native GPU discovery failed",
                    &[
                        ("error", error),
                        ("stderr", stderr),
                        ("libDirs", self.lib_dirs()),
                    ],
                );
                Probe::default()
            });
            Ok(Answers {
                archs,
                listed,
                probe,
            })
        });
        slog::log(
            Level::Debug,
            "llama_server.go:52",
            "llama-server device discovery took",
            &[
                ("duration", format!("{:?}", start.elapsed())),
                ("libDirs", self.lib_dirs()),
            ],
        );
        slog::log(
            Level::Debug,
            source(self.era, "runner.go:472", "runner.go:494"),
            "bootstrap discovery took",
            &[
                ("duration", format!("{:?}", start.elapsed())),
                ("OLLAMA_LIBRARY_PATH", self.lib_dirs()),
                ("extra_envs", format!("map[{}]", self.extra_envs())),
            ],
        );
        if let Err(error) = &result {
            slog::log(
                Level::Info,
                source(self.era, "runner.go:500", "runner.go:522"),
                "failure during llama-server GPU discovery",
                &[
                    ("OLLAMA_LIBRARY_PATH", self.lib_dirs()),
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
            Level::Trace,
            "llama_server.go:71",
            "running llama-server for discovery",
            &[
                ("cmd", cmd.get_program().to_string_lossy().into_owned()),
                ("libDirs", self.lib_dirs()),
            ],
        );
        let mut server = child::start(&mut cmd).map_err(|e| e.to_string())?;
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
        slog::log(
            Level::Debug,
            "llama_server.go:121",
            "llama-server discovery: stopped subprocess after collecting GPU info",
            &[("exit", "unknown".into()), ("libDirs", self.lib_dirs())],
        );
        match line {
            Ok(line) => Ok(parse_archs(&line)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                slog::log(
                    Level::Warn,
                    source(self.era, "runner.go:562", "runner.go:584"),
                    "llama-server GPU discovery watchdog timed out",
                    &[
                        ("OLLAMA_LIBRARY_PATH", self.lib_dirs()),
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
        if child::trace_output() {
            eprint!("{text}");
        }
        if !out.status.success() {
            let exit = out
                .status
                .code()
                .map_or("signal: killed".into(), |c| format!("exit status {c}"));
            slog::log(
                Level::Debug,
                "llama_server.go:150",
                "llama-server --list-devices failed",
                &[("error", exit.clone())],
            );
            return Err(format!("llama-server --list-devices failed: {exit}"));
        }
        Ok(text.lines().filter_map(parse_device_line).collect())
    }

    /// Child 3: `ollama gpu-discover --lib-dir <lib/ollama> --lib-dir <dir>` (15 s), with the
    /// llama-server children's environment; on failure, why and what it wrote on stderr.
    fn gpu_discover(&self) -> Result<Probe, (String, String)> {
        let mut cmd = Command::new(&self.install.exe);
        cmd.arg("gpu-discover")
            .arg("--lib-dir")
            .arg(&self.install.lib_ollama)
            .arg("--lib-dir")
            .arg(&self.dir);
        self.env(&mut cmd);
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(15));
        let out = output_with_timeout(&mut cmd, left).map_err(|e| (e, String::new()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if child::trace_output() {
            eprint!("{stderr}");
        }
        if !out.status.success() {
            let why = match out.status.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".into(),
            };
            return Err((why, stderr));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| (e.to_string(), stderr))
    }

    fn combine(&self, archs: &[String], listed: &[Listed], probe: &Probe) -> Vec<Gpu> {
        let cuda_v12 = self.dir.ends_with("cuda_v12");
        let libdir = self.dir.rsplit('/').next().unwrap_or("").to_string();
        let mut gpus = Vec::new();
        let mut unverified_logged = false;
        for (index, (name, description, total_mib, free_mib)) in listed.iter().enumerate() {
            let Some(dev) = probe.devices.get(index) else {
                continue;
            };
            if *total_mib == 0 {
                continue;
            }
            if !compiled_for(
                "llama_server.go:292",
                archs,
                description,
                dev,
                &self.lib_dirs(),
            ) {
                continue;
            }
            // v0.30.0's filterOldCUDADriver (cuda_v12 only): a device older than CC 7 needs
            // NVIDIA driver 570; without NVML's answer nothing is dropped.
            if cuda_v12 && dev.compute_major > 0 && dev.compute_major < 7 {
                if dev.nvidia_driver_major == 0 {
                    if !std::mem::replace(&mut unverified_logged, true) {
                        slog::log(
                            Level::Warn,
                            "cuda_compat.go:28",
                            "could not verify NVIDIA driver compatibility for an older NVIDIA GPU",
                            &[],
                        );
                    }
                } else if dev.nvidia_driver_major < 570 {
                    log_driver_too_old("cuda_compat.go:38", description, dev, 570);
                    continue;
                }
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

/// Whether the dir's build covers the device's compute capability; logged when it does not,
/// as llama_server.go logs it (`source` is that line in the era's Ollama).
pub(super) fn compiled_for(
    source: &str,
    archs: &[String],
    description: &str,
    dev: &ProbedDevice,
    lib_dirs: &str,
) -> bool {
    let arch = format!("{}{}0", dev.compute_major, dev.compute_minor);
    if archs.contains(&arch) {
        return true;
    }
    slog::log(
        Level::Info,
        source,
        "skipping CUDA device — compute capability not in compiled architectures",
        &[
            ("device", description.to_string()),
            ("cc", arch),
            ("archs", format!("[{}]", archs.join(" "))),
            ("libDirs", lib_dirs.to_string()),
        ],
    );
    false
}

/// A device dropped for its NVIDIA driver (NVML's major version) being older than `required`,
/// as cuda_compat.go logs it (`source` is that line in the era's Ollama).
pub(super) fn log_driver_too_old(
    source: &str,
    description: &str,
    dev: &ProbedDevice,
    required: i32,
) {
    slog::log(
        Level::Warn,
        source,
        "NVIDIA driver too old",
        &[
            ("device", description.to_string()),
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
