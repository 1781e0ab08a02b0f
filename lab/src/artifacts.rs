//! Where the lab's ingredients are: the C stand-ins built by build.rs, and the `ollama` binary
//! and reference shims that cargo puts next to the running executable.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

pub struct Artifacts {
    /// C stand-ins: libggml*, libcudart, NVIDIA's driver libraries, the early shim, llama-server.
    pub libs: PathBuf,
    pub ollama: PathBuf,
    pub cuda_shim: PathBuf,
    pub nvml_shim: PathBuf,
}

impl Artifacts {
    /// Looks next to the current executable (and one level up, for test binaries in deps/).
    /// `VGPU_LAB_LIBS` overrides where the C stand-ins are, for a lab copied to another machine.
    pub fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let dirs: Vec<&Path> = exe.ancestors().skip(1).take(2).collect();
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            match dirs.iter().map(|d| d.join(name)).find(|p| p.exists()) {
                Some(path) => Ok(path),
                None => bail!(
                    "{name} not found next to {}: build the workspace first (cargo build)",
                    exe.display()
                ),
            }
        };
        let libs = std::env::var_os("VGPU_LAB_LIBS")
            .map_or_else(|| PathBuf::from(env!("VGPU_LAB_LIBS")), PathBuf::from);
        Self::from_dir(
            &libs,
            find("ollama")?,
            find("libvgpu_cuda.so")?,
            find("libvgpu_nvml.so")?,
        )
    }

    fn from_dir(
        libs: &Path,
        ollama: PathBuf,
        cuda_shim: PathBuf,
        nvml_shim: PathBuf,
    ) -> anyhow::Result<Self> {
        if !libs.join("cuda_v12/libggml-cuda.so").exists() {
            bail!(
                "the lab's C libraries are missing from {}: rebuild vgpu-lab",
                libs.display()
            );
        }
        Ok(Self {
            libs: libs.to_path_buf(),
            ollama,
            cuda_shim,
            nvml_shim,
        })
    }

    pub fn lib(&self, name: &str) -> PathBuf {
        self.libs.join(name)
    }
}
