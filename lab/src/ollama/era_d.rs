//! Era D (v0.33): era C's three children per library dir, with v0.33's differences.
//! - Every dir holding a ggml backend is probed (`cuda_v12`, `cuda_v13`, `vulkan`), one at a
//!   time, in Go's random map order; Vulkan is on unless `OLLAMA_VULKAN=0`, and
//!   `OLLAMA_LLM_LIBRARY=<dir>` keeps one dir.
//! - Filters: the dir's exact ARCHS list; the driver floor in `cuda_v12` only, with the cudart
//!   version taken from its file name; an NVML failure drops nothing.
//! - The second pass repeats all three children per CUDA device (`CUDA_VISIBLE_DEVICES=<index>`
//!   and `GGML_CUDA_INIT=1`), in parallel within one window.
//! - When several CUDA dirs work, the one that sorts highest and covers every GPU wins; Vulkan
//!   counts only where no CUDA dir found a GPU.
//! - At model load the children run again per kept dir (`CUDA_VISIBLE_DEVICES=<ids>`, 3 s).
use std::collections::BTreeSet;
use std::hash::BuildHasher as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::device::{Gpu, pci_id};
use super::era_b::ggml_dirs;
use super::era_c::{Answers, Pass, compiled_for, log_driver_too_old, log_filtered};
use super::gpu_discover::ProbedDevice;
use super::{Era, Install, discovery_timeout};
use crate::slog::{self, Level};

pub fn discover(install: &Install) -> Vec<Gpu> {
    slog::log(
        Level::Info,
        "runner.go:60",
        "discovering available GPUs...",
        &[],
    );
    let mut found: Vec<(String, Gpu)> = Vec::new();
    for dir in lib_dirs(install) {
        let pass = Pass {
            era: Era::D,
            install,
            dir: dir.clone(),
            extra: Vec::new(),
            deadline: Instant::now() + discovery_timeout(Duration::from_secs(15)),
        };
        if let Ok(answers) = pass.answers() {
            found.extend(keep(&dir, &answers).into_iter().map(|g| (dir.clone(), g)));
        }
    }
    let deadline = Instant::now() + discovery_timeout(Duration::from_secs(30));
    let verified: Vec<(String, Gpu)> = std::thread::scope(|scope| {
        let checks: Vec<_> = found
            .into_iter()
            .map(|(dir, gpu)| scope.spawn(move || verify(install, dir, gpu, deadline)))
            .collect();
        checks
            .into_iter()
            .filter_map(|c| c.join().ok().flatten())
            .collect()
    });
    choose(verified)
}

/// The GPU library dirs in the order Go's map iteration gives them: a different one each run.
fn lib_dirs(install: &Install) -> Vec<String> {
    let mut dirs = ggml_dirs(install);
    if matches!(std::env::var("OLLAMA_VULKAN").as_deref(), Ok("0" | "false")) {
        dirs.retain(|d| !d.ends_with("/vulkan"));
    }
    if let Ok(only) = std::env::var("OLLAMA_LLM_LIBRARY") {
        dirs.retain(|d| base_name(d) == only);
    }
    let order = std::collections::hash_map::RandomState::new();
    dirs.sort_by_cached_key(|d| order.hash_one(d));
    dirs
}

fn base_name(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

/// The devices one dir's children report, after v0.33's filters.
fn keep(dir: &str, answers: &Answers) -> Vec<Gpu> {
    let libdir = base_name(dir);
    // The driver floor applies to cuda_v12 alone, against its runtime's version.
    let floor = (libdir == "cuda_v12").then(|| cudart_version(dir));
    let mut gpus = Vec::new();
    let mut unverified_logged = false;
    for (index, (name, description, total_mib, free_mib)) in answers.listed.iter().enumerate() {
        if *total_mib == 0 {
            continue;
        }
        let mut gpu = Gpu {
            id: index.to_string(),
            library: name.trim_end_matches(|c: char| c.is_ascii_digit()).into(),
            name: name.clone(),
            description: description.clone(),
            compute: (0, 0),
            driver: (0, 0),
            pci_id: pci_id(index),
            total: total_mib << 20,
            free: free_mib << 20,
            libdirs: vec!["ollama".into(), libdir.into()],
        };
        if libdir.starts_with("cuda") {
            let Some(dev) = answers.probe.devices.get(index) else {
                continue;
            };
            if !compiled_for(
                "llama_server.go:299",
                &answers.archs,
                description,
                dev,
                &go_lib_dirs(dir),
            ) || floor.is_some_and(|cudart| {
                !driver_new_enough(cudart, description, dev, &mut unverified_logged)
            }) {
                continue;
            }
            gpu.compute = (dev.compute_major, dev.compute_minor);
            gpu.driver = (dev.cuda_driver_major, dev.cuda_driver_minor);
            if !dev.device_id.is_empty() {
                gpu.pci_id = dev.device_id.clone();
            }
        }
        gpus.push(gpu);
    }
    gpus
}

/// The driver floor of `cuda_v12`, whose runtime is `cudart`: every device needs NVIDIA
/// driver 550 with cudart 12.4+, and CC < 7 needs 570 with cudart 12.8+. Without NVML's
/// answer nothing is dropped.
fn driver_new_enough(
    cudart: (u32, u32),
    description: &str,
    dev: &ProbedDevice,
    logged: &mut bool,
) -> bool {
    let driver = dev.nvidia_driver_major;
    if driver == 0 {
        if !std::mem::replace(logged, true) {
            slog::log(
                Level::Warn,
                "cuda_compat.go:39",
                "could not verify NVIDIA driver compatibility for CUDA",
                &[],
            );
        }
        return true;
    }
    let (source, required) = if cudart >= (12, 4) && driver < 550 {
        ("cuda_compat.go:65", 550)
    } else if dev.compute_major < 7 && cudart >= (12, 8) && driver < 570 {
        ("cuda_compat.go:70", 570)
    } else {
        return true;
    };
    log_driver_too_old(source, description, dev, required);
    false
}

/// `[lib/ollama lib/ollama/cuda_v12]`, the pass's libDirs as Go prints them.
fn go_lib_dirs(dir: &str) -> String {
    let parent = Path::new(dir).parent().unwrap_or(Path::new(""));
    format!("[{} {dir}]", parent.display())
}

/// `libcudart.so.12.8.90` in the dir → (12, 8); (0, 0) when there is none.
fn cudart_version(dir: &str) -> (u32, u32) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.strip_prefix("libcudart.so.")?.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            Some((major, minor))
        })
        .max()
        .unwrap_or((0, 0))
}

/// The second pass: all three children again with only this device visible.
fn verify(install: &Install, dir: String, gpu: Gpu, deadline: Instant) -> Option<(String, Gpu)> {
    if gpu.library != "CUDA" {
        return Some((dir, gpu));
    }
    // ml.GetDevicesEnv, then AddInitValidation's GGML_CUDA_INIT=1 (a deep init).
    let pass = Pass {
        era: Era::D,
        install,
        dir: dir.clone(),
        extra: vec![
            ("CUDA_VISIBLE_DEVICES", gpu.id.clone()),
            ("GGML_CUDA_INIT", "1".into()),
        ],
        deadline,
    };
    if pass.answers().is_ok_and(|a| !keep(&dir, &a).is_empty()) {
        return Some((dir, gpu));
    }
    log_filtered(Era::D, &gpu, &dir);
    None
}

/// One dir's devices per GPU: the highest-sorting CUDA dir that covers every CUDA GPU (else,
/// per GPU, the highest dir that has it); other backends only when no CUDA dir found one.
fn choose(found: Vec<(String, Gpu)>) -> Vec<Gpu> {
    let (cuda, other): (Vec<_>, Vec<_>) = found.into_iter().partition(|(_, g)| g.library == "CUDA");
    if cuda.is_empty() {
        return other.into_iter().map(|(_, g)| g).collect();
    }
    let gpus: BTreeSet<&str> = cuda.iter().map(|(_, g)| g.pci_id.as_str()).collect();
    let dirs: BTreeSet<&str> = cuda.iter().map(|(d, _)| d.as_str()).collect();
    let covers = |dir: &str| {
        gpus.iter()
            .all(|id| cuda.iter().any(|(d, g)| d == dir && g.pci_id == *id))
    };
    let winner = dirs.iter().rev().find(|d| covers(d)).copied();
    let mut chosen: Vec<Gpu> = Vec::new();
    for id in &gpus {
        let best = cuda
            .iter()
            .filter(|(d, g)| g.pci_id == *id && winner.is_none_or(|w| d == w))
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, gpu)) = best {
            chosen.push(gpu.clone());
        }
    }
    chosen.sort_by(|a, b| a.id.cmp(&b.id));
    chosen
}

/// A model load with no runner covering the GPUs: the three children run again for each kept
/// dir, with the kept devices' ids and a 3 s timeout.
pub fn refresh_for_model_load(install: &Install, gpus: &[Gpu]) {
    let dirs: BTreeSet<&str> = gpus
        .iter()
        .filter_map(|g| g.libdirs.last().map(String::as_str))
        .collect();
    for libdir in dirs {
        let ids: Vec<&str> = gpus
            .iter()
            .filter(|g| g.libdirs.last().map(String::as_str) == Some(libdir))
            .map(|g| g.id.as_str())
            .collect();
        slog::log(
            Level::Debug,
            "sched.go:212",
            "refreshing GPU discovery for model load",
            &[("libdir", libdir.into()), ("ids", ids.join(","))],
        );
        let pass = Pass {
            era: Era::D,
            install,
            dir: Path::new(&install.lib_ollama)
                .join(libdir)
                .to_string_lossy()
                .into_owned(),
            extra: vec![("CUDA_VISIBLE_DEVICES", ids.join(","))],
            deadline: Instant::now() + Duration::from_secs(3),
        };
        let _ = pass.answers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(id: &str, pci: &str, dir: &str) -> (String, Gpu) {
        let gpu = Gpu {
            id: id.into(),
            library: "CUDA".into(),
            name: format!("CUDA{id}"),
            description: String::new(),
            compute: (9, 0),
            driver: (13, 0),
            pci_id: pci.into(),
            total: 1,
            free: 1,
            libdirs: vec!["ollama".into(), dir.into()],
        };
        (format!("/l/{dir}"), gpu)
    }

    #[test]
    fn the_highest_dir_covering_every_gpu_wins() {
        let both = vec![
            gpu("0", "a", "cuda_v13"),
            gpu("0", "a", "cuda_v12"),
            gpu("1", "b", "cuda_v12"),
        ];
        // cuda_v13 lacks GPU b: cuda_v12 covers both.
        let chosen = choose(both);
        assert!(chosen.iter().all(|g| g.libdirs[1] == "cuda_v12"));
        assert_eq!(chosen.len(), 2);
        let chosen = choose(vec![gpu("0", "a", "cuda_v12"), gpu("0", "a", "cuda_v13")]);
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].libdirs[1], "cuda_v13");
    }

    #[test]
    fn vulkan_counts_only_without_a_cuda_gpu() {
        let mut vulkan = gpu("0", "v", "vulkan");
        vulkan.1.library = "Vulkan".into();
        let chosen = choose(vec![vulkan.clone(), gpu("0", "a", "cuda_v12")]);
        assert_eq!(chosen[0].library, "CUDA");
        assert_eq!(choose(vec![vulkan])[0].library, "Vulkan");
    }
}
