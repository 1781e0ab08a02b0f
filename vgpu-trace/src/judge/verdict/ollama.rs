//! What Ollama's own log says it concluded, held against the verdict from the libraries:
//! agreeing, it is added as a note; when Ollama reports no CUDA device although the CUDA steps
//! passed on the shim, Ollama dropped the device after the fact, and the verdict says so and
//! why (its "skipping CUDA device", "driver too old" ... lines); when CUDA failed and another
//! backend (Vulkan) found the GPU, the verdict says Ollama fell back to it.
use crate::model::OllamaSays;
use crate::model::Outcome;

#[derive(Debug, Default)]
pub struct OllamaView {
    /// What its last discovery reported ("inference compute"), one per device.
    reported: Vec<Reported>,
    /// Why devices were dropped in that discovery.
    dropped: Vec<String>,
    /// The library dir its CUDA devices came from (`libdirs=ollama,cuda_v13`).
    cuda_libdir: Option<String>,
}

impl OllamaView {
    pub fn observe(&mut self, says: &OllamaSays) {
        match says {
            // A new discovery (at start, or a refresh at model load) replaces the last.
            OllamaSays::Discovering => *self = Self::default(),
            OllamaSays::InferenceCompute {
                library,
                compute,
                description,
                libdirs,
            } => {
                if library.eq_ignore_ascii_case("cuda")
                    && let Some(dir) = libdirs.as_deref().and_then(|d| d.rsplit(',').next())
                {
                    self.cuda_libdir = Some(dir.to_string());
                }
                // Vulkan devices report compute 0.0: nothing worth naming.
                let details: Vec<&str> = [description, compute]
                    .into_iter()
                    .filter_map(|v| v.as_deref().filter(|v| !v.is_empty() && *v != "0.0"))
                    .collect();
                let cpu = library.eq_ignore_ascii_case("cpu");
                let reported = Reported {
                    library: library.clone(),
                    text: if details.is_empty() || cpu {
                        format!("library={library}")
                    } else {
                        format!("library={library} ({})", details.join(", compute "))
                    },
                };
                // The same line twice is one line relayed (a container runtime passing on
                // its container's output), not two devices worth naming twice.
                if !self.reported.contains(&reported) {
                    self.reported.push(reported);
                }
            }
            OllamaSays::DeviceDropped { reason }
            | OllamaSays::DriverNotLoaded { reason }
            | OllamaSays::BackendFailed { reason }
            | OllamaSays::DiscoveryFailed { reason } => {
                if !self.dropped.contains(reason) {
                    self.dropped.push(reason.clone());
                }
            }
            OllamaSays::NoGpus
            | OllamaSays::RunnerStarting { .. }
            | OllamaSays::DriverUnverified => {}
        }
    }

    /// The library dir whose CUDA devices Ollama kept, as its log says.
    pub fn cuda_libdir(&self) -> Option<&str> {
        self.cuda_libdir.as_deref()
    }

    /// The verdict from the libraries, checked against what Ollama reported.
    pub fn cross_check(&self, outcome: Outcome, text: String) -> (Outcome, String) {
        if self.reported.is_empty() {
            return (outcome, text);
        }
        let gpus: Vec<&Reported> = self.reported.iter().filter(|r| !r.is("cpu")).collect();
        let shown = gpus.iter().map(|r| r.text.as_str()).collect::<Vec<_>>();
        if gpus.iter().any(|r| r.is("cuda")) {
            return (
                outcome,
                format!("{text}; Ollama reports {}", shown.join(", ")),
            );
        }
        if !outcome.shim_used() {
            if gpus.is_empty() {
                // Ollama's own reason, where its log gave one, confirms (or contradicts) ours.
                let why = match self.dropped.is_empty() {
                    true => String::new(),
                    false => format!(" (its log: {})", self.dropped.join("; ")),
                };
                return (outcome, format!("{text}; Ollama reported library=cpu{why}"));
            }
            // CUDA failed, but another backend (Vulkan, on by default since v0.33) found the GPU.
            let mut libraries: Vec<&str> = gpus.iter().map(|r| r.library.as_str()).collect();
            libraries.dedup();
            return (
                outcome,
                format!(
                    "{text}; Ollama fell back to {}: {}",
                    libraries.join(", "),
                    shown.join(", ")
                ),
            );
        }
        let why = if self.dropped.is_empty() {
            "it dropped the device without saying why in its log".to_string()
        } else {
            self.dropped.join("; ")
        };
        let ended = if shown.is_empty() {
            "library=cpu".to_string()
        } else {
            shown.join(", ")
        };
        (
            Outcome::OllamaFiltered,
            format!("{text}; yet Ollama reported {ended}, having dropped the device: {why}"),
        )
    }
}

/// One device's conclusion: the CPU (no GPU left), or a library and what Ollama said of it.
#[derive(Debug, PartialEq, Eq)]
struct Reported {
    library: String,
    /// `library=CUDA (NVIDIA H200, compute 9.0)`.
    text: String,
}

impl Reported {
    /// Whether Ollama named this library (`cpu`, `cuda`; any case, as its eras differ).
    fn is(&self, library: &str) -> bool {
        self.library.eq_ignore_ascii_case(library)
    }
}
