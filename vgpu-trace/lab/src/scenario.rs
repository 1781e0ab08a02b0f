//! A scratch root holding one Ollama install and one shim installation, plus the environment
//! `ollama serve` gets there (as a systemd unit's Environment= would give it). Nothing outside
//! the root is changed; a private ld.so.cache is only ever bind-mounted inside a private mount
//! namespace.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::artifacts::Artifacts;
use crate::install::{self, Layout, copy_into, force_symlink};

pub const DRIVER_VERSION: &str = "570.133.07";

pub struct Scenario<'a> {
    pub root: PathBuf,
    pub art: &'a Artifacts,
    pub env: Vec<(String, String)>,
    /// A cache to bind over /etc/ld.so.cache when serve runs.
    pub private_cache: Option<PathBuf>,
}

impl<'a> Scenario<'a> {
    pub fn new(root: &Path, art: &'a Artifacts) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let root = std::fs::canonicalize(root)?;
        let env = vec![(
            "VGPU_LAB_ROOT".to_string(),
            root.to_string_lossy().into_owned(),
        )];
        Ok(Self {
            root,
            art,
            env,
            private_cache: None,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn ollama(&self) -> PathBuf {
        self.path("usr/local/bin/ollama")
    }

    pub fn lib_ollama(&self) -> PathBuf {
        self.path("usr/local/lib/ollama")
    }

    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.into()));
    }

    /// `/usr/local/bin/ollama` and `/usr/local/lib/ollama/{..., cuda_v12/}` as Ollama's installer lays them out.
    pub fn install_ollama(&self) -> anyhow::Result<()> {
        copy_into(&self.art.ollama, &self.path("usr/local/bin"), "ollama")?;
        let lib = self.lib_ollama();
        for name in ["libggml-base.so", "libggml.so", "llama-server"] {
            copy_into(&self.art.lib(name), &lib, name)?;
        }
        for entry in std::fs::read_dir(&self.art.libs)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("libggml-cpu-") {
                copy_into(&entry.path(), &lib, &name)?;
            }
        }
        let cuda = lib.join("cuda_v12");
        copy_into(&self.art.lib("libggml-cuda.so"), &cuda, "libggml-cuda.so")?;
        copy_into(
            &self.art.lib("libcudart.so.12.8.90"),
            &cuda,
            "libcudart.so.12.8.90",
        )?;
        force_symlink(
            Path::new("libcudart.so.12.8.90"),
            &cuda.join("libcudart.so.12"),
        )?;
        Ok(())
    }

    /// The reference shims under `prefix` (relative to the root).
    pub fn install_shims(&self, prefix: &str, layout: Layout) -> anyhow::Result<PathBuf> {
        let prefix = self.path(prefix);
        install::install_shims(&self.art.cuda_shim, &self.art.nvml_shim, &prefix, layout)?;
        let lib = match layout {
            Layout::Lib => prefix.join("lib"),
            Layout::Seed => prefix.join("opt/vgpu/lib"),
        };
        self.record_shims(&lib)?;
        Ok(lib)
    }

    /// Where the shims are, as an installer records it for `vgpu-trace doctor`
    /// (`etc/vgpu-trace/shims.toml` in the root).
    pub fn record_shims(&self, lib: &Path) -> anyhow::Result<()> {
        let config = self.path("etc/vgpu-trace");
        std::fs::create_dir_all(&config)?;
        let toml = format!(
            "cuda = \"{}/{}\"\nnvml = \"{}/{}\"\n",
            lib.display(),
            install::CUDA_FILE,
            lib.display(),
            install::NVML_FILE
        );
        std::fs::write(config.join("shims.toml"), toml)?;
        Ok(())
    }

    /// NVIDIA's driver libraries (as on a machine without a GPU) in `dir`, with soname links.
    pub fn install_nvidia_driver(&self, dir: &str) -> anyhow::Result<PathBuf> {
        let dir = self.path(dir);
        for (file, soname) in [
            ("libcuda.so", "libcuda.so.1"),
            ("libnvidia-ml.so", "libnvidia-ml.so.1"),
        ] {
            let real = format!("{file}.{DRIVER_VERSION}");
            copy_into(&self.art.lib(&real), &dir, &real)?;
            force_symlink(Path::new(&real), &dir.join(soname))?;
        }
        Ok(dir)
    }

    pub fn copy_lab_lib(&self, name: &str, dir: &str) -> anyhow::Result<PathBuf> {
        Ok(copy_into(&self.art.lib(name), &self.path(dir), name)?)
    }

    /// Builds `etc/ld.so.cache` inside the root from `dirs` plus the host's own configuration,
    /// and arranges for it to replace /etc/ld.so.cache for serve.
    pub fn ldconfig(&mut self, dirs: &[PathBuf]) -> anyhow::Result<()> {
        let etc = self.path("etc");
        std::fs::create_dir_all(&etc)?;
        let cache = install::private_ld_cache(&etc, dirs)?;
        self.private_cache = Some(cache);
        Ok(())
    }
}
