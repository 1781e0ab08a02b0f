//! Named scenarios: one healthy installation and one per failure class seen by the seed team
//! and in Ollama's issue tracker. Each says what discovery decides in each era, and why.
use crate::install::Layout;
use crate::ollama::Era;
use crate::scenario::Scenario;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `inference compute ... library=cuda` (the shim is used).
    Cuda,
    /// `inference compute id=cpu library=cpu` (no GPU).
    Cpu,
    /// `inference compute ... library=Vulkan` (CUDA failed, the Vulkan backend found the GPU).
    Vulkan,
    /// The era cannot run this scenario to the end (era A discovery has no timeout).
    Hangs,
}

/// What a preset needs from the machine beyond the lab itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requires {
    Nothing,
    /// A private ld.so.cache, bind-mounted in a private mount namespace.
    Root,
    /// NVIDIA's driver libraries in the host's ld.so.cache (a GPU machine).
    NvidiaDriver,
}

pub struct Preset {
    pub name: &'static str,
    /// What is wrong (or right) with the installation.
    pub summary: &'static str,
    /// Why each era decides what it decides.
    pub why: &'static str,
    /// Outcome in eras A, B, C and D.
    pub expect: [Outcome; 4],
    /// The tracer's verdict (`vgpu-trace`'s outcome name) in eras A, B, C and D; empty where
    /// the era cannot run the scenario.
    pub verdict: [&'static str; 4],
    pub requires: Requires,
    setup: fn(&mut Scenario) -> anyhow::Result<()>,
}

impl Preset {
    pub fn expect(&self, era: Era) -> Outcome {
        self.expect[era as usize]
    }

    pub fn verdict(&self, era: Era) -> &'static str {
        self.verdict[era as usize]
    }

    pub fn build(&self, scenario: &mut Scenario) -> anyhow::Result<()> {
        scenario.install_ollama()?;
        (self.setup)(scenario)
    }
}

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

use Outcome::{Cpu, Cuda, Hangs, Vulkan};
use Requires::{Nothing, NvidiaDriver, Root};

/// Shims in /opt/vgpu/lib, on the service's LD_LIBRARY_PATH.
fn healthy(s: &mut Scenario) -> anyhow::Result<()> {
    let lib = s.install_shims("opt/vgpu", Layout::Lib)?;
    s.set_env("LD_LIBRARY_PATH", lib.to_string_lossy());
    Ok(())
}

/// `libcuda.so.1` -> the early shim (no VMM API, no cuGetProcAddress) in /opt/vgpu/lib.
fn early_shim(s: &mut Scenario) -> anyhow::Result<()> {
    let lib = s.copy_lab_lib("libvgpu-cuda-early.so", "opt/vgpu/lib")?;
    crate::install::force_symlink(
        std::path::Path::new("libvgpu-cuda-early.so"),
        &s.path("opt/vgpu/lib/libcuda.so.1"),
    )?;
    let dir = lib
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    s.set_env("LD_LIBRARY_PATH", dir);
    Ok(())
}

pub static PRESETS: &[Preset] = &[
    Preset {
        name: "healthy",
        summary: "shims in /opt/vgpu/lib, which is on the service's LD_LIBRARY_PATH",
        why: "every era finds libcuda.so.1 -> libvgpu-cuda.so first and the virtual GPU answers",
        expect: [Cuda, Cuda, Cuda, Cuda],
        verdict: ["shim-used", "shim-used", "shim-used", "shim-used"],
        requires: Nothing,
        setup: healthy,
    },
    Preset {
        name: "healthy-ldconfig",
        summary: "shims in /usr/local/vgpu/lib, registered in ld.so.cache (needs root: private cache)",
        why: "B and C resolve libcuda.so.1 through ld.so.cache; era A never reads the cache and its globs do not cover /usr/local/vgpu/lib",
        expect: [Cpu, Cuda, Cuda, Cuda],
        verdict: ["not-found", "shim-used", "shim-used", "shim-used"],
        requires: Root,
        setup: |s| {
            let lib = s.install_shims("usr/local/vgpu", Layout::Lib)?;
            s.ldconfig(&[lib])
        },
    },
    Preset {
        name: "shim-off-path",
        summary: "shims installed in /opt/vgpu/lib, but only the login shell's LD_LIBRARY_PATH names it",
        why: "the service environment has no path to the shim and nothing else provides libcuda.so.1",
        expect: [Cpu, Cpu, Cpu, Cpu],
        verdict: ["not-found", "not-found", "not-found", "not-found"],
        requires: Nothing,
        setup: |s| {
            s.install_shims("opt/vgpu", Layout::Lib)?;
            Ok(())
        },
    },
    Preset {
        name: "symlink-to-driver",
        summary: "/opt/vgpu/lib/libcuda.so.1 points at NVIDIA's libcuda.so.570.133.07 instead of the shim",
        why: "the soname link decides: NVIDIA's driver loads, finds no GPU and cuInit returns CUDA_ERROR_NO_DEVICE (100)",
        expect: [Cpu, Cpu, Cpu, Cpu],
        verdict: [
            "nvidia-driver",
            "nvidia-driver",
            "nvidia-driver",
            "nvidia-driver",
        ],
        requires: Nothing,
        setup: |s| {
            let lib = s.install_shims("opt/vgpu", Layout::Lib)?;
            s.install_nvidia_driver("opt/vgpu/lib")?;
            s.set_env("LD_LIBRARY_PATH", lib.to_string_lossy());
            Ok(())
        },
    },
    Preset {
        name: "stale-ldcache",
        summary: "ld.so.cache still points at /usr/local/vgpu-0.1/lib, moved away by an upgrade (needs root)",
        why: "the cache entry names a file that is gone; ld.so falls through to the default dirs and finds nothing",
        expect: [Cpu, Cpu, Cpu, Cpu],
        verdict: ["not-found", "not-found", "not-found", "not-found"],
        requires: Root,
        setup: |s| {
            let old = s.install_shims("usr/local/vgpu-0.1", Layout::Lib)?;
            s.ldconfig(&[old])?;
            // The upgrade moves the files and does not re-run ldconfig.
            std::fs::rename(s.path("usr/local/vgpu-0.1"), s.path("usr/local/vgpu"))?;
            s.record_shims(&s.path("usr/local/vgpu/lib"))
        },
    },
    Preset {
        name: "driver-shadows-shim",
        summary: "LD_LIBRARY_PATH lists /usr/local/nvidia/lib64 (NVIDIA's driver) before the shim's dir",
        why: "ld.so takes the first libcuda.so.1 on the path: NVIDIA's, which has no GPU; era A tries the next candidate and reaches the shim",
        expect: [Cuda, Cpu, Cpu, Cpu],
        verdict: [
            "shim-used",
            "nvidia-driver",
            "nvidia-driver",
            "nvidia-driver",
        ],
        requires: Nothing,
        setup: |s| {
            let shim = s.install_shims("opt/vgpu", Layout::Lib)?;
            let nvidia = s.install_nvidia_driver("usr/local/nvidia/lib64")?;
            s.set_env(
                "LD_LIBRARY_PATH",
                format!("{}:{}", nvidia.display(), shim.display()),
            );
            Ok(())
        },
    },
    Preset {
        name: "bundled-shadows-shim",
        summary: "a copy of NVIDIA's libcuda.so.1 sits in lib/ollama/cuda_v12, ahead of the shim",
        why: "the runner's LD_LIBRARY_PATH starts with Ollama's own dirs, so the copy wins; era A only globs lib/ollama itself; in D cuda_v13 has no copy, reaches the shim and wins",
        expect: [Cuda, Cpu, Cpu, Cuda],
        verdict: ["shim-used", "bundled-copy", "bundled-copy", "shim-used"],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.install_nvidia_driver(&format!("{}/cuda_v12", s.lib_ollama_rel()))?;
            Ok(())
        },
    },
    Preset {
        name: "shim-missing-symbols",
        summary: "libcuda.so.1 -> libvgpu-cuda-early.so, an early shim without the VMM API or cuGetProcAddress",
        why: "libggml-cuda.so imports cuMemCreate and friends, so dlopen(RTLD_NOW) fails with 'undefined symbol'; era A's dlsym list is satisfied",
        expect: [Cuda, Cpu, Cpu, Cpu],
        verdict: [
            "shim-used",
            "missing-symbols",
            "missing-symbols",
            "missing-symbols",
        ],
        requires: Nothing,
        setup: early_shim,
    },
    Preset {
        name: "cuinit-no-device",
        summary: "healthy install, but the shim's cuInit returns CUDA_ERROR_NO_DEVICE (remote GPU unreachable)",
        why: "every era stops at cuInit's 100",
        expect: [Cpu, Cpu, Cpu, Cpu],
        verdict: ["init-failed", "init-failed", "init-failed", "init-failed"],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.set_env("VGPU_FAIL", "cuInit=100");
            Ok(())
        },
    },
    Preset {
        name: "nvml-init-fails",
        summary: "healthy install of a compute 6.1 virtual GPU, but nvmlInit_v2 returns NVML_ERROR_DRIVER_NOT_LOADED",
        why: "NVML failure is not fatal: A and B use NVML for free memory only; C and D read the NVIDIA driver version from NVML for cuda_v12's driver floor, and without it drop nothing (\"could not verify NVIDIA driver compatibility\"; D's cuda_v13 skips CC 6.1, cuda_v12 keeps it)",
        expect: [Cuda, Cuda, Cuda, Cuda],
        verdict: ["shim-used", "nvml-failed", "nvml-failed", "nvml-failed"],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.set_env("VGPU_FAIL", "nvmlInit_v2=9");
            s.set_env("VGPU_COMPUTE_CAPABILITY", "6.1");
            Ok(())
        },
    },
    Preset {
        name: "discovery-timeout",
        summary: "the shim's cuInit never returns (remote end hangs); discovery timeout shortened to 2 s",
        why: "B and C kill the discovery child at the timeout and fall back to CPU; era A would hang in serve itself",
        expect: [Hangs, Cpu, Cpu, Cpu],
        verdict: ["", "unfinished", "unfinished", "unfinished"],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.set_env("VGPU_FAIL", "cuInit=hang");
            s.set_env("OLLAMA_LAB_DISCOVERY_TIMEOUT", "2");
            Ok(())
        },
    },
    Preset {
        name: "cudart-export-tables",
        summary: "the bundled libcudart asks the driver for cuGetExportTable, which an emulating shim cannot give",
        why: "what the real libcudart always does (Ollama v0.32.15 traced with the emulating shim ends the same way): cudart's init fails (CUDA_ERROR_NOT_FOUND, 500: \"named symbol not found\") wherever discovery goes through cudart (B's runner, C's and D's llama-server); era A and gpu-discover use the driver API directly",
        expect: [Cuda, Cpu, Cpu, Cpu],
        verdict: ["shim-used", "init-failed", "init-failed", "init-failed"],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.set_env("VGPU_LAB_CUDART_EXPORT_TABLES", "1");
            Ok(())
        },
    },
    Preset {
        name: "cc-not-compiled",
        summary: "healthy install, but the shim reports a compute capability 3.5 GPU",
        why: "A drops CC < 5.0 as too old; B's runner keeps it; C and D drop it in every dir: 3.5 is in no CUDA : ARCHS list",
        expect: [Cpu, Cuda, Cpu, Cpu],
        verdict: [
            "ollama-filtered",
            "shim-used",
            "ollama-filtered",
            "ollama-filtered",
        ],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.set_env("VGPU_COMPUTE_CAPABILITY", "3.5");
            Ok(())
        },
    },
    Preset {
        name: "driver-too-old-for-v13",
        summary: "healthy install, but the shim reports CUDA driver 12.8 (12080) and NVIDIA driver 570",
        why: "libcudart.so.13 needs a 13.0 driver, so D's cuda_v13 lists no device and cuda_v12 (CUDA 12.8) wins; the older eras bundle only CUDA 12.8",
        expect: [Cuda, Cuda, Cuda, Cuda],
        verdict: ["shim-used", "shim-used", "shim-used", "shim-used"],
        requires: Nothing,
        setup: |s| {
            healthy(s)?;
            s.set_env("VGPU_CUDA_VERSION", "12.8");
            s.set_env("VGPU_DRIVER_VERSION", "570.133.07");
            Ok(())
        },
    },
    Preset {
        name: "vulkan-instead",
        summary: "the early shim (missing symbols) as libcuda.so.1, and a Vulkan ICD for the GPU",
        why: "CUDA fails as in shim-missing-symbols; D's vulkan dir (on by default since v0.33) finds the ICD's device, so Ollama ends library=Vulkan",
        expect: [Cuda, Cpu, Cpu, Vulkan],
        verdict: [
            "shim-used",
            "missing-symbols",
            "missing-symbols",
            "missing-symbols",
        ],
        requires: Nothing,
        setup: |s| {
            early_shim(s)?;
            let icd = s.path("usr/share/vulkan/icd.d");
            std::fs::create_dir_all(&icd)?;
            std::fs::write(
                icd.join("nvidia_icd.json"),
                "{\"file_format_version\": \"1.0.1\", \"ICD\": {\"library_path\": \"libGLX_nvidia.so.0\", \"api_version\": \"1.4.312\"}}\n",
            )?;
            Ok(())
        },
    },
    Preset {
        name: "passthrough",
        summary: "healthy install whose shims forward to the host's NVIDIA driver (GPU machines only)",
        why: "the shim answers with the real GPU: the shape of a remoting shim, end to end",
        expect: [Cuda, Cuda, Cuda, Cuda],
        verdict: ["shim-used", "shim-used", "shim-used", "shim-used"],
        requires: NvidiaDriver,
        setup: |s| {
            let cuda = host_library("libcuda.so.1")?;
            let nvml = host_library("libnvidia-ml.so.1")?;
            healthy(s)?;
            s.set_env("VGPU_CUDA_PASSTHROUGH", cuda);
            s.set_env("VGPU_NVML_PASSTHROUGH", nvml);
            Ok(())
        },
    },
];

/// Where the host's ld.so.cache says `soname` is (x86-64 entries only).
pub fn host_library(soname: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("ldconfig").arg("-p").output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix(soname)?.strip_prefix(' '))
        .filter(|rest| rest.contains("x86-64"))
        .find_map(|rest| {
            rest.split_once("=> ")
                .map(|(_, path)| path.trim().to_string())
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no {soname} in the host's ld.so.cache: this preset needs NVIDIA's driver"
            )
        })
}
