//! What one of Ollama's own log lines says about discovery, once recognised
//! (`analysis::ollama_log` recognises them).
use serde::{Deserialize, Serialize};

/// A recognised line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "says", rename_all = "kebab-case")]
pub enum OllamaSays {
    /// Discovery starts: "discovering available GPUs..." (eras B, C), "looking for compatible
    /// GPUs" (era A).
    Discovering,
    /// Its conclusion for one device, or `library=cpu` when none is left.
    InferenceCompute {
        library: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compute: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        libdirs: Option<String>,
    },
    /// A device it found and then dropped, and why.
    DeviceDropped { reason: String },
    /// The driver library could not be loaded or initialised.
    DriverNotLoaded { reason: String },
    /// A discovery step failed or timed out.
    DiscoveryFailed { reason: String },
    /// "no compatible GPUs were discovered" (era A).
    NoGpus,
    /// What the bundled ggml said of its CUDA backend (a runner's or llama-server's own
    /// output): a backend that did not load, CUDA that did not initialise, a device that failed.
    BackendFailed { reason: String },
    /// NVML could not give the driver version, so no driver floor was checked (v0.33 drops
    /// nothing for it).
    DriverUnverified,
    /// A runner or llama-server child is started.
    RunnerStarting {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmd: Option<String>,
    },
}

impl OllamaSays {
    /// A short reading for the timeline.
    pub fn summary(&self) -> String {
        match self {
            Self::Discovering => "discovery starts".into(),
            Self::InferenceCompute {
                library,
                compute,
                description,
                libdirs,
            } => {
                let mut s = format!("inference compute library={library}");
                for (key, value) in [
                    ("compute", compute),
                    ("description", description),
                    ("libdirs", libdirs),
                ] {
                    if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                        s.push_str(&format!(" {key}={v}"));
                    }
                }
                s
            }
            Self::DeviceDropped { reason } => format!("device dropped: {reason}"),
            Self::DriverNotLoaded { reason } => format!("driver not loaded: {reason}"),
            Self::DiscoveryFailed { reason } => format!("discovery failed: {reason}"),
            Self::NoGpus => "no compatible GPUs were discovered".into(),
            Self::BackendFailed { reason } => format!("ggml: {reason}"),
            Self::DriverUnverified => "could not verify the NVIDIA driver's version (NVML)".into(),
            Self::RunnerStarting { cmd } => match cmd {
                Some(cmd) => format!("starting {cmd}"),
                None => "starting a runner".into(),
            },
        }
    }
}
