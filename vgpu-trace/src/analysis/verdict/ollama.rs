//! What Ollama's own log says it concluded, held against the verdict from the libraries:
//! agreeing, it is added as a note; when Ollama reports `library=cpu` although the CUDA steps
//! passed on the shim, Ollama dropped the device after the fact, and the verdict says so and
//! why (its "skipping CUDA device", "driver too old" ... lines).
use super::Outcome;
use crate::analysis::ollama_log::OllamaSays;

#[derive(Debug, Default)]
pub struct OllamaView {
    /// What its last discovery reported ("inference compute"), one per device.
    reported: Vec<Reported>,
    /// Why devices were dropped in that discovery.
    dropped: Vec<String>,
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
                ..
            } => {
                let details: Vec<&str> = [description, compute]
                    .into_iter()
                    .filter_map(|v| v.as_deref().filter(|v| !v.is_empty()))
                    .collect();
                let cpu = library.eq_ignore_ascii_case("cpu");
                let reported = Reported {
                    cpu,
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

    /// The verdict from the libraries, checked against what Ollama reported.
    pub fn cross_check(&self, outcome: Outcome, text: String) -> (Outcome, String) {
        if self.reported.is_empty() {
            return (outcome, text);
        }
        let gpus: Vec<&str> = self
            .reported
            .iter()
            .filter(|r| !r.cpu)
            .map(|r| r.text.as_str())
            .collect();
        if !gpus.is_empty() {
            return (
                outcome,
                format!("{text}; Ollama reports {}", gpus.join(", ")),
            );
        }
        if !outcome.shim_used() {
            return (outcome, format!("{text}; Ollama reported library=cpu"));
        }
        let why = if self.dropped.is_empty() {
            "it dropped the device without saying why in its log".to_string()
        } else {
            self.dropped.join("; ")
        };
        (
            Outcome::OllamaFiltered,
            format!("{text}; yet Ollama reported library=cpu, having dropped the device: {why}"),
        )
    }
}

/// One device's conclusion: the CPU (no GPU left), or a library and what Ollama said of it.
#[derive(Debug, PartialEq, Eq)]
struct Reported {
    cpu: bool,
    /// `library=CUDA (NVIDIA H200, compute 9.0)`.
    text: String,
}
