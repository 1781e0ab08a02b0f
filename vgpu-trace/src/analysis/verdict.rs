//! The one-line verdict: did GPU discovery use the CUDA shim, and if not, why. A fold over the
//! timeline, so a live run and the replay of its record reach the same verdict.
//!
//! Each process's CUDA story is a sequence of attempts, one per CUDA driver library it loads
//! (era A walks several candidates in one process). An attempt succeeds when cuInit returns
//! CUDA_SUCCESS and no device count of 0 follows; it fails at the first failing driver call,
//! or when the library cannot be bound (undefined symbol). A non-shim driver loaded while a shim
//! attempt is under way is the shim forwarding to it, not a new attempt. A process's last
//! attempt is its answer; among processes of one role (command and subcommand) the latest
//! answers, as a retry replaces a failed try. Discovery needs every role to succeed (Ollama
//! drops a device that its listing or verification step could not see), so the first role
//! that failed is the reason; when none failed, the shim was used. Ollama's own log, where
//! traced, is then held against that (`ollama`).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use self::ollama::OllamaView;
use self::process::Process;
use crate::analysis::classify::Class;
use crate::model::{EventKind, TraceEvent};

mod ollama;
mod process;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The shim was loaded as the CUDA driver and initialised with at least one device.
    ShimUsed,
    /// As `ShimUsed`, but NVML failed to initialise.
    NvmlFailed,
    /// The shim was loaded, but a driver call failed (cuInit, cuGetExportTable, ...).
    InitFailed,
    /// The shim initialised and reported no devices.
    NoDevices,
    /// The shim was loaded, but the process ended before cuInit returned (a timeout kill).
    Unfinished,
    /// Binding to the loaded driver failed: it lacks symbols the backend imports.
    MissingSymbols,
    /// NVIDIA's own driver was loaded as the CUDA driver.
    NvidiaDriver,
    /// A copy bundled with the application (or a toolkit's stub) was loaded as the driver.
    BundledCopy,
    /// A driver that is neither a known shim nor NVIDIA's (or could not be classified).
    OtherDriver,
    /// The shim initialised with devices, but Ollama reported `library=cpu`: it dropped the
    /// device afterwards (compute capability, driver version, memory), as its log says.
    OllamaFiltered,
    /// No CUDA driver library was loaded.
    NotFound,
    /// Nothing in the trace asked for CUDA.
    NoCuda,
}

impl Outcome {
    pub const ALL: [Outcome; 12] = [
        Self::ShimUsed,
        Self::NvmlFailed,
        Self::InitFailed,
        Self::NoDevices,
        Self::Unfinished,
        Self::MissingSymbols,
        Self::NvidiaDriver,
        Self::BundledCopy,
        Self::OtherDriver,
        Self::OllamaFiltered,
        Self::NotFound,
        Self::NoCuda,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ShimUsed => "shim-used",
            Self::NvmlFailed => "nvml-failed",
            Self::InitFailed => "init-failed",
            Self::NoDevices => "no-devices",
            Self::Unfinished => "unfinished",
            Self::MissingSymbols => "missing-symbols",
            Self::NvidiaDriver => "nvidia-driver",
            Self::BundledCopy => "bundled-copy",
            Self::OtherDriver => "other-driver",
            Self::OllamaFiltered => "ollama-filtered",
            Self::NotFound => "not-found",
            Self::NoCuda => "no-cuda",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Whether discovery ended on the shim.
    pub fn shim_used(self) -> bool {
        matches!(self, Self::ShimUsed | Self::NvmlFailed)
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

/// Folds a timeline into a verdict; feed it every event, ask at any time.
#[derive(Debug, Default)]
pub struct Judge {
    /// By pid, with the order first seen (the NVML clause names the first failure). A process
    /// that exits without a CUDA story is dropped: `attach --all` stays flat.
    procs: HashMap<u32, (u64, Process)>,
    seen: u64,
    ollama: OllamaView,
}

impl Judge {
    pub fn observe(&mut self, ev: &TraceEvent) {
        if let EventKind::Log(line) = &ev.kind {
            if let Some(says) = &line.ollama {
                self.ollama.observe(says);
            }
            return;
        }
        let seen = &mut self.seen;
        let (_, p) = self.procs.entry(ev.pid).or_insert_with(|| {
            *seen += 1;
            (*seen, Process::new(&ev.comm))
        });
        p.observe(ev);
        if matches!(ev.kind, EventKind::Exit(_)) && !p.has_story() {
            self.procs.remove(&ev.pid);
        }
    }

    /// The processes in the order first seen.
    fn in_order(&self) -> Vec<(u32, &Process)> {
        let mut procs: Vec<(u64, u32, &Process)> = self
            .procs
            .iter()
            .map(|(pid, (seen, p))| (*seen, *pid, p))
            .collect();
        procs.sort_unstable_by_key(|(seen, ..)| *seen);
        procs.into_iter().map(|(_, pid, p)| (pid, p)).collect()
    }

    pub fn verdict(&self) -> Verdict {
        // Each role's latest process speaks for it (a retry replaces a failed try).
        let procs = self.in_order();
        let mut latest: Vec<&(u32, &Process)> = Vec::new();
        for entry in procs.iter().filter(|(_, p)| p.last_cuda_ns > 0) {
            match latest.iter_mut().find(|(_, p)| p.label == entry.1.label) {
                Some(slot) if slot.1.last_cuda_ns < entry.1.last_cuda_ns => *slot = entry,
                Some(_) => {}
                None => latest.push(entry),
            }
        }
        latest.sort_by_key(|(_, p)| p.last_cuda_ns);
        let judged: Vec<(u32, Outcome, String)> = latest
            .iter()
            .map(|(pid, p)| {
                let (outcome, text) = p.judge(&format!("pid {pid} ({})", p.label));
                (*pid, outcome, text)
            })
            .collect();
        // Discovery needs every step to pass: the first role that failed is the reason.
        let decisive = judged
            .iter()
            .find(|(_, outcome, _)| !outcome.shim_used())
            .or(judged.last());
        let Some((pid, outcome, text)) = decisive.cloned() else {
            let (outcome, text) = self.ollama.cross_check(
                Outcome::NoCuda,
                "nothing in the trace asked for CUDA".into(),
            );
            return Verdict {
                outcome,
                pid: None,
                text,
            };
        };
        let (outcome, text) = match outcome {
            Outcome::ShimUsed => self.with_nvml(text),
            _ => (outcome, text),
        };
        let (outcome, text) = self.ollama.cross_check(outcome, text);
        Verdict {
            outcome,
            pid: Some(pid),
            text,
        }
    }

    /// NVML's part, once CUDA went to the shim.
    fn with_nvml(&self, text: String) -> (Outcome, String) {
        let procs = self.in_order();
        let failed = procs
            .iter()
            .find_map(|(pid, p)| Some((pid, p, p.nvml_failed.as_ref()?)));
        if let Some((pid, p, call)) = failed {
            let on = match &p.nvml {
                Some((path, class)) => format!(
                    " on {path} [{}]",
                    class.map_or("unclassified", |c| c.name())
                ),
                None => String::new(),
            };
            return (
                Outcome::NvmlFailed,
                format!(
                    "{text}; but NVML failed in pid {pid} ({}): {call}{on}",
                    p.label
                ),
            );
        }
        let nvml = procs.iter().find_map(|(_, p)| p.nvml.as_ref());
        let note = match nvml {
            Some((_, Some(Class::Shim))) => "; NVML shim initialised".to_string(),
            Some((path, class)) => format!(
                "; NVML is {path} [{}]",
                class.map_or("unclassified", |c| c.name())
            ),
            None => String::new(),
        };
        (Outcome::ShimUsed, text + &note)
    }
}

/// The verdict over a whole timeline.
pub fn judge(events: &[TraceEvent]) -> Verdict {
    let mut j = Judge::default();
    for ev in events {
        j.observe(ev);
    }
    j.verdict()
}

#[cfg(test)]
mod tests;
