//! What a library file is, for someone installing a CUDA/NVML shim: the shim itself, NVIDIA's
//! driver, a copy bundled with Ollama, part of a CUDA toolkit, a system library, or other.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::elf::ElfFacts;
use crate::model::Class;

pub const CUDA_SONAME: &str = "libcuda.so.1";
pub const NVML_SONAME: &str = "libnvidia-ml.so.1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Cuda,
    Nvml,
}

impl Api {
    pub fn soname(self) -> &'static str {
        match self {
            Api::Cuda => CUDA_SONAME,
            Api::Nvml => NVML_SONAME,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::Cuda => "cuda",
            Api::Nvml => "nvml",
        }
    }

    /// `cuda` or `nvml`, as configuration and flags spell it.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "cuda" => Ok(Api::Cuda),
            "nvml" => Ok(Api::Nvml),
            other => Err(format!(
                "unknown shim kind {other:?}: expected cuda or nvml"
            )),
        }
    }

    pub fn of_soname(soname: &str) -> Option<Self> {
        [Api::Cuda, Api::Nvml]
            .into_iter()
            .find(|a| a.soname() == soname)
    }
}

/// A shim file, by its real path (symlinks resolved), and how it became known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shim {
    pub api: Api,
    pub path: String,
    pub source: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShimSet {
    pub shims: Vec<Shim>,
    /// Configured shims whose file does not exist: "PATH (SOURCE)".
    pub missing: Vec<String>,
}

impl ShimSet {
    pub fn add(&mut self, api: Api, path: &str, source: &str) {
        if !self.shims.iter().any(|s| s.path == path) {
            self.shims.push(Shim {
                api,
                path: path.to_string(),
                source: source.to_string(),
            });
        }
    }

    pub fn contains(&self, real_path: &str) -> bool {
        self.shims.iter().any(|s| s.path == real_path)
    }

    pub fn of(&self, api: Api) -> impl Iterator<Item = &Shim> {
        self.shims.iter().filter(move |s| s.api == api)
    }
}

/// NVIDIA's driver files carry the driver version: `libcuda.so.570.133.07`, `libnvidia-ml.so.535.54`.
pub fn is_nvidia_driver_file(file_name: &str) -> bool {
    ["libcuda.so.", "libnvidia-ml.so."].iter().any(|prefix| {
        file_name.strip_prefix(prefix).is_some_and(|version| {
            let parts: Vec<&str> = version.split('.').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && parts[0].len() >= 3
        })
    })
}

/// A library that answers to a CUDA/NVML soname but is not NVIDIA's: a shim.
pub fn looks_like_shim(real_path: &str, facts: &ElfFacts) -> Option<Api> {
    let api = Api::of_soname(facts.soname.as_deref()?)?;
    let file = Path::new(real_path).file_name()?.to_string_lossy();
    let stub = real_path.contains("/stubs/");
    (!is_nvidia_driver_file(&file) && !stub && !real_path.contains("/wsl/")).then_some(api)
}

/// Like [`classify`], also recognising a shim nobody configured by its SONAME.
pub fn classify_file(real_path: &str, facts: Option<&ElfFacts>, shims: &ShimSet) -> Class {
    match facts.and_then(|f| looks_like_shim(real_path, f)) {
        Some(_) => Class::Shim,
        None => classify(real_path, shims),
    }
}

/// The class of the file at `real_path` (symlinks resolved).
pub fn classify(real_path: &str, shims: &ShimSet) -> Class {
    let file = Path::new(real_path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if shims.contains(real_path) {
        Class::Shim
    } else if is_nvidia_driver_file(&file) || real_path.starts_with("/usr/lib/wsl/") {
        Class::NvidiaDriver
    } else if real_path.contains("/lib/ollama/") {
        Class::OllamaBundled
    } else if real_path.starts_with("/usr/local/cuda")
        || real_path.starts_with("/opt/cuda")
        || real_path.contains("/targets/") && real_path.contains("cuda")
        || real_path.contains("/site-packages/nvidia/")
    {
        Class::CudaToolkit
    } else if ["/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/"]
        .iter()
        .any(|d| real_path.starts_with(d))
    {
        Class::System
    } else {
        Class::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_files_are_known_by_their_version() {
        assert!(is_nvidia_driver_file("libcuda.so.570.133.07"));
        assert!(is_nvidia_driver_file("libnvidia-ml.so.535.54"));
        assert!(!is_nvidia_driver_file("libcuda.so.1"));
        assert!(!is_nvidia_driver_file("libcuda.so"));
        assert!(!is_nvidia_driver_file("libvgpu-cuda.so"));
    }

    #[test]
    fn classes() {
        let mut shims = ShimSet::default();
        shims.add(Api::Cuda, "/opt/vgpu/lib/libvgpu-cuda.so", "--shim");
        let c = |p| classify(p, &shims);
        assert_eq!(c("/opt/vgpu/lib/libvgpu-cuda.so"), Class::Shim);
        assert_eq!(
            c("/usr/local/nvidia/lib64/libcuda.so.570.133.07"),
            Class::NvidiaDriver
        );
        assert_eq!(c("/usr/lib/wsl/lib/libcuda.so.1"), Class::NvidiaDriver);
        assert_eq!(
            c("/usr/local/lib/ollama/cuda_v12/libcudart.so.12.8.90"),
            Class::OllamaBundled
        );
        assert_eq!(
            c("/usr/local/cuda-12.8/targets/x86_64-linux/lib/stubs/libcuda.so"),
            Class::CudaToolkit
        );
        assert_eq!(c("/usr/lib/x86_64-linux-gnu/libm.so.6"), Class::System);
        assert_eq!(c("/home/me/libfoo.so"), Class::Other);
    }
}
