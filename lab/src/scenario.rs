//! A scratch root holding one Ollama install (an era's files, in the tarball's or the Docker
//! image's layout) and one shim installation, plus the environment
//! `ollama serve` gets there (as a systemd unit's Environment= would give it). Nothing outside
//! the root is changed; a private ld.so.cache is only ever bind-mounted inside a private mount
//! namespace.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::artifacts::Artifacts;
use crate::install::{self, Layout, copy_into, force_symlink};
use crate::ollama::Era;

pub const DRIVER_VERSION: &str = "570.133.07";

/// The ggml CPU variants an era ships in lib/ollama: Ollama's vendored ggml builds 7 (eras A
/// and B); the llama.cpp build behind its llama-server (v0.30 on) builds ggml's 14
/// (GGML_CPU_ALL_VARIANTS), as v0.32.15's tarball holds them.
pub fn cpu_variants(era: Era) -> &'static [&'static str] {
    match era {
        Era::A | Era::B => &[
            "x64",
            "sse42",
            "sandybridge",
            "haswell",
            "skylakex",
            "icelake",
            "alderlake",
        ],
        Era::C | Era::D => &crate::cpu_variants::CPU_VARIANTS,
    }
}

/// Where Ollama is installed: install.sh's tarball, or the official Docker image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OllamaLayout {
    /// `/usr/local/bin/ollama`, `/usr/local/lib/ollama`, no MLX.
    Tarball,
    /// `/usr/bin/ollama`, `/usr/lib/ollama` with `mlx_cuda_v13` (eras C and D), the image's
    /// `LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64` and `NVIDIA_*`.
    Docker,
}

impl OllamaLayout {
    /// Era D's users mostly run the image; the older eras are modelled on the tarball.
    pub fn default_for(era: Era) -> Self {
        match era {
            Era::D => Self::Docker,
            _ => Self::Tarball,
        }
    }
}

impl std::str::FromStr for OllamaLayout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tarball" => Ok(Self::Tarball),
            "docker" => Ok(Self::Docker),
            _ => Err(format!("unknown layout {s:?}: expected tarball or docker")),
        }
    }
}

pub struct Scenario<'a> {
    pub root: PathBuf,
    pub art: &'a Artifacts,
    /// The Ollama version installed (which library dirs it ships).
    pub era: Era,
    pub layout: OllamaLayout,
    pub env: Vec<(String, String)>,
    /// A cache to bind over /etc/ld.so.cache when serve runs.
    pub private_cache: Option<PathBuf>,
}

impl<'a> Scenario<'a> {
    pub fn new(
        root: &Path,
        art: &'a Artifacts,
        era: Era,
        layout: OllamaLayout,
    ) -> anyhow::Result<Self> {
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
            era,
            layout,
            env,
            private_cache: None,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn ollama(&self) -> PathBuf {
        match self.layout {
            OllamaLayout::Tarball => self.path("usr/local/bin/ollama"),
            OllamaLayout::Docker => self.path("usr/bin/ollama"),
        }
    }

    /// `lib/ollama`, relative to the root.
    pub fn lib_ollama_rel(&self) -> &'static str {
        match self.layout {
            OllamaLayout::Tarball => "usr/local/lib/ollama",
            OllamaLayout::Docker => "usr/lib/ollama",
        }
    }

    pub fn lib_ollama(&self) -> PathBuf {
        self.path(self.lib_ollama_rel())
    }

    pub fn set_env(&mut self, key: &str, value: impl Into<String>) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.into()));
    }

    /// `bin/ollama` and `lib/ollama/{..., cuda_v12/}` as the era's installer or image lays
    /// them out: era D adds `cuda_v13/` and `vulkan/`, the Docker image `mlx_cuda_v13/`.
    pub fn install_ollama(&mut self) -> anyhow::Result<()> {
        let exe = self.ollama();
        copy_into(
            &self.art.ollama,
            exe.parent().unwrap_or(&self.root),
            "ollama",
        )?;
        let lib = self.lib_ollama();
        for name in ["libggml-base.so", "libggml.so", "llama-server"] {
            copy_into(&self.art.lib(name), &lib, name)?;
        }
        for variant in cpu_variants(self.era) {
            let name = format!("libggml-cpu-{variant}.so");
            copy_into(&self.art.lib(&name), &lib, &name)?;
        }
        let mut gpu_dirs = vec!["cuda_v12"];
        if self.era == Era::D {
            gpu_dirs.extend(["cuda_v13", "vulkan"]);
        }
        if self.layout == OllamaLayout::Docker && matches!(self.era, Era::C | Era::D) {
            gpu_dirs.push("mlx_cuda_v13");
        }
        for dir in gpu_dirs {
            self.install_gpu_dir(&lib, dir)?;
        }
        if self.layout == OllamaLayout::Docker {
            let nvidia = ["usr/local/nvidia/lib", "usr/local/nvidia/lib64"]
                .map(|d| self.path(d).to_string_lossy().into_owned());
            self.set_env("LD_LIBRARY_PATH", nvidia.join(":"));
            self.set_env("NVIDIA_DRIVER_CAPABILITIES", "compute,utility");
            self.set_env("NVIDIA_VISIBLE_DEVICES", "all");
        }
        Ok(())
    }

    /// One of lib/ollama's backend dirs, with a soname link for its CUDA runtime.
    fn install_gpu_dir(&self, lib: &Path, dir: &str) -> anyhow::Result<()> {
        let from = self.art.lib(dir);
        let to = lib.join(dir);
        for entry in std::fs::read_dir(&from)
            .with_context(|| format!("cannot read {}", from.display()))?
            .flatten()
            .filter(|e| e.path().is_file())
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            copy_into(&entry.path(), &to, &name)?;
            // libcudart.so.12.8.90 is found by its soname, libcudart.so.12.
            if let Some(version) = name.strip_prefix("libcudart.so.")
                && let Some((major, _)) = version.split_once('.')
            {
                force_symlink(Path::new(&name), &to.join(format!("libcudart.so.{major}")))?;
            }
        }
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
