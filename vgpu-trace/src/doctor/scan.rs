//! Every `libcuda.so*` / `libnvidia-ml.so*` in every directory ld.so or Ollama's globs would
//! look at, with its symlink chain and what it ends at.
use std::path::Path;

use super::Setup;
use crate::loader::classify::{Api, ShimSet, looks_like_shim};
use crate::loader::elf::ElfFacts;
use crate::loader::fs::{self, Hop};

/// Directories of Ollama era A's fixed libcuda globs (without the file part).
const ERA_A_DIRS: [&str; 9] = [
    "/usr/local/cuda*/targets/*/lib",
    "/usr/lib/*-linux-gnu/nvidia/current",
    "/usr/lib/*-linux-gnu",
    "/usr/lib/wsl/lib",
    "/usr/lib/wsl/drivers/*",
    "/opt/cuda/lib*",
    "/usr/local/cuda/lib*",
    "/usr/lib*",
    "/usr/local/lib*",
];

pub struct LibFile {
    pub path: String,
    pub hops: Vec<Hop>,
    /// Where the chain ends, if it ends at a file.
    pub real: Option<String>,
    pub broken: Option<String>,
    pub facts: Option<ElfFacts>,
}

impl LibFile {
    /// One of the names ld.so looks for (`libcuda.so*`, `libnvidia-ml.so*`).
    pub fn is_nvidia_name(&self) -> bool {
        let file = Path::new(&self.path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        file.starts_with("libcuda.so") || file.starts_with("libnvidia-ml.so")
    }

    /// `a -> b -> c`, as the chain reads.
    pub fn chain(&self) -> String {
        let mut out = self.path.clone();
        for hop in self.hops.iter().skip(1) {
            out += &format!(" -> {}", hop.path.display());
        }
        if let Some(why) = &self.broken {
            out += &format!(" -> BROKEN ({why})");
        }
        out
    }
}

pub struct Scan {
    /// Searched directories, in the order they first matter.
    pub dirs: Vec<String>,
    pub files: Vec<LibFile>,
}

impl Scan {
    pub fn new(setup: &Setup) -> Self {
        let mut dirs: Vec<String> = Vec::new();
        let mut add = |d: &str| {
            let d = d.trim_end_matches('/').to_string();
            if !d.is_empty() && !dirs.contains(&d) {
                dirs.push(d);
            }
        };
        for d in setup.ld_library_path.as_deref().unwrap_or("").split(':') {
            add(d);
        }
        if let Some(ollama) = &setup.ollama {
            add(&ollama.lib_dir);
            ollama.gpu_dirs.iter().for_each(|d| add(d));
        }
        setup.conf_dirs.iter().for_each(|d| add(d));
        if let Ok(cache) = &setup.cache {
            for e in cache
                .entries
                .iter()
                .filter(|e| Api::of_soname(&e.soname).is_some())
            {
                add(Path::new(&e.path)
                    .parent()
                    .map(|p| p.to_string_lossy())
                    .as_deref()
                    .unwrap_or("/"));
            }
        }
        setup.platform.system_dirs.iter().for_each(|d| add(d));
        for pattern in ERA_A_DIRS {
            for d in glob_dirs(setup.fs, pattern) {
                add(&d);
            }
        }
        let mut files = Vec::new();
        for dir in &dirs {
            let Ok(names) = setup.fs.read_dir(Path::new(dir)) else {
                continue;
            };
            for name in names.iter().filter(|n| is_candidate(n)) {
                let path = format!("{dir}/{name}");
                let (hops, broken) = match fs::symlink_chain(setup.fs, Path::new(&path)) {
                    Ok(hops) => (hops, None),
                    Err((hops, why)) => (hops, Some(why)),
                };
                let real = broken
                    .is_none()
                    .then(|| hops.last().map(|h| h.path.to_string_lossy().into_owned()))
                    .flatten();
                let facts = real.as_deref().and_then(|r| (setup.facts)(r));
                files.push(LibFile {
                    path,
                    hops,
                    real,
                    broken,
                    facts,
                });
            }
        }
        Self { dirs, files }
    }

    /// Adds every file that answers to a CUDA/NVML soname and is not NVIDIA's.
    pub fn detect_shims(&self, shims: &mut ShimSet) {
        for file in &self.files {
            let (Some(real), Some(facts)) = (&file.real, &file.facts) else {
                continue;
            };
            if let Some(api) = looks_like_shim(real, facts) {
                let dir = Path::new(&file.path)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                shims.add(api, real, &format!("detected in {dir}"));
            }
        }
    }
}

/// NVIDIA's names, and files a shim author may have named after the API (`libvgpu-cuda.so`).
fn is_candidate(name: &str) -> bool {
    let runtime = ["cudart", "cublas", "cudnn", "ggml"]
        .iter()
        .any(|r| name.contains(r));
    name.contains(".so")
        && !runtime
        && (name.contains("cuda") || name.contains("nvidia-ml") || name.contains("nvml"))
}

/// Directories matching a pattern with `*` in any component.
fn glob_dirs(fs: &dyn crate::loader::fs::Fs, pattern: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for base in &out {
            if !part.contains('*') {
                next.push(format!("{base}/{part}"));
                continue;
            }
            let dir = if base.is_empty() {
                "/".to_string()
            } else {
                base.clone()
            };
            for name in fs.read_dir(Path::new(&dir)).unwrap_or_default() {
                if crate::loader::ldconf::fnmatch(part, &name) {
                    next.push(format!("{base}/{name}"));
                }
            }
        }
        out = next;
    }
    out.into_iter()
        .filter(|d| fs.kind(Path::new(d)).is_some())
        .collect()
}
