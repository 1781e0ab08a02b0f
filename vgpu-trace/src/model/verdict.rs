//! The one-line verdict: did GPU discovery use the CUDA shim, and if not, why
//! (`analysis::verdict` reaches it from the timeline).
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares `Outcome` with each variant's name written once: the record, `check` rules and
/// `--until` all spell outcomes by these names.
macro_rules! outcomes {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Outcome {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Outcome {
            /// Every outcome's name, in declaration order.
            pub const NAMES: &[&str] = &[$($name),*];
            pub const ALL: [Outcome; Self::NAMES.len()] = [$(Self::$variant),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

outcomes! {
    /// The shim was loaded as the CUDA driver and initialised with at least one device.
    ShimUsed => "shim-used",
    /// As `ShimUsed`, but NVML failed to initialise.
    NvmlFailed => "nvml-failed",
    /// The shim was loaded, but a driver call failed (cuInit, cuGetExportTable, ...).
    InitFailed => "init-failed",
    /// The shim initialised and reported no devices.
    NoDevices => "no-devices",
    /// The shim was loaded, but the process was killed (a timeout), or the trace ended, before
    /// cuInit returned; or it called the shim, though not cuInit, and ended.
    Unfinished => "unfinished",
    /// The shim was loaded, and the process exited on its own without calling it.
    ShimUnused => "shim-unused",
    /// The shim was mapped, but the dlopen loading it failed: what the shim itself needs (a
    /// newer C library, a library of its own) is not there.
    LoadFailed => "load-failed",
    /// Binding to the loaded driver failed: it lacks symbols the backend imports.
    MissingSymbols => "missing-symbols",
    /// NVIDIA's own driver was loaded as the CUDA driver.
    NvidiaDriver => "nvidia-driver",
    /// A copy bundled with the application (or a toolkit's stub) was loaded as the driver.
    BundledCopy => "bundled-copy",
    /// A driver that is neither a known shim nor NVIDIA's (or could not be classified).
    OtherDriver => "other-driver",
    /// The shim initialised with devices, but Ollama reported no CUDA device: it dropped the
    /// device afterwards (compute capability, driver version, memory), as its log says.
    OllamaFiltered => "ollama-filtered",
    /// No CUDA driver library was loaded.
    NotFound => "not-found",
    /// Nothing in the trace asked for CUDA.
    NoCuda => "no-cuda",
}

impl Outcome {
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Whether discovery ended on the shim.
    pub fn shim_used(self) -> bool {
        matches!(self, Self::ShimUsed | Self::NvmlFailed)
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Self::parse(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, Self::NAMES))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The process whose evidence decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The reason, one line.
    pub text: String,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.outcome.name(), self.text)
    }
}
