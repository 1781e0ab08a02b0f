//! What a library file is, for someone installing a CUDA/NVML shim (`analysis::classify`
//! decides it).
use serde::{Deserialize, Serialize};

/// The shim itself, NVIDIA's driver, a copy bundled with Ollama, part of a CUDA toolkit, a
/// system library, or other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Shim,
    NvidiaDriver,
    OllamaBundled,
    CudaToolkit,
    System,
    Other,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Shim => "shim",
            Class::NvidiaDriver => "nvidia-driver",
            Class::OllamaBundled => "ollama-bundled",
            Class::CudaToolkit => "cuda-toolkit",
            Class::System => "system",
            Class::Other => "other",
        }
    }
}
