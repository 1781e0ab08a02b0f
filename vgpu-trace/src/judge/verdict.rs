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
//! that failed is the reason; when none failed, the shim was used. Since v0.30 each library
//! dir (`cuda_v12`, `cuda_v13`) is discovered on its own and one working dir is enough, so
//! roles are grouped by dir. Ollama's own log, where traced, is then held against that
//! (`ollama`).
use std::collections::HashMap;

use self::ollama::OllamaView;
use self::process::Process;
use crate::model::{Class, EventKind, Outcome, TraceEvent, Verdict};

mod dlerror;
mod ollama;
mod process;

/// One role's answer.
struct Judged<'a> {
    pid: u32,
    libdir: Option<&'a str>,
    outcome: Outcome,
    text: String,
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
        let procs = self.in_order();
        // A process that only mapped a driver it never called (a DT_NEEDED of MLX in `ollama
        // serve`) took no part in discovery, unless nothing else did.
        let mut taking_part: Vec<&(u32, &Process)> =
            procs.iter().filter(|(_, p)| p.took_part()).collect();
        if taking_part.is_empty() {
            taking_part = procs.iter().filter(|(_, p)| p.last_cuda_ns > 0).collect();
        }
        // Each role's latest process speaks for it (a retry replaces a failed try); a role is
        // a command and subcommand working on one library dir.
        let mut latest: Vec<&(u32, &Process)> = Vec::new();
        for entry in taking_part {
            let same_role = |p: &Process| p.label == entry.1.label && p.libdir == entry.1.libdir;
            match latest.iter_mut().find(|(_, p)| same_role(p)) {
                Some(slot) if slot.1.last_cuda_ns < entry.1.last_cuda_ns => *slot = entry,
                Some(_) => {}
                None => latest.push(entry),
            }
        }
        latest.sort_by_key(|(_, p)| p.last_cuda_ns);
        let judged: Vec<Judged> = latest
            .iter()
            .map(|(pid, p)| {
                let who = match &p.libdir {
                    Some(dir) => format!("pid {pid} ({}, {dir})", p.label),
                    None => format!("pid {pid} ({})", p.label),
                };
                let (outcome, text) = p.judge(&who);
                Judged {
                    pid: *pid,
                    libdir: p.libdir.as_deref(),
                    outcome,
                    text,
                }
            })
            .collect();
        // Within a library dir discovery needs every step to pass, so the first role that
        // failed is the dir's reason. Dirs are alternatives: Ollama keeps the highest-sorting
        // dir that works; only when none works does the first failure decide.
        let mut dirs: Vec<&Judged> = Vec::new();
        for j in &judged {
            match dirs.iter_mut().find(|d| d.libdir == j.libdir) {
                Some(d) if d.outcome.shim_used() => *d = j,
                Some(_) => {}
                None => dirs.push(j),
            }
        }
        // The dir Ollama's log says it kept, else the highest that worked (Ollama's rule).
        let working = || dirs.iter().filter(|d| d.outcome.shim_used());
        let worked = working()
            .find(|d| d.libdir.is_some() && d.libdir == self.ollama.cuda_libdir())
            .or_else(|| working().max_by_key(|d| d.libdir));
        let (decisive, others) = match worked {
            Some(w) => {
                let failed: Vec<String> = dirs
                    .iter()
                    .filter(|d| !d.outcome.shim_used())
                    .map(|d| format!("; {} failed: {}", d.libdir.unwrap_or("another dir"), d.text))
                    .collect();
                (Some(*w), failed.concat())
            }
            // A discovery child's failure says more than serve's own load (MLX's).
            None => (
                dirs.iter()
                    .find(|d| d.libdir.is_some())
                    .or(dirs.first())
                    .copied(),
                String::new(),
            ),
        };
        let Some(Judged {
            pid, outcome, text, ..
        }) = decisive
        else {
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
            Outcome::ShimUsed => self.with_nvml(text.clone()),
            _ => (*outcome, text.clone()),
        };
        let (outcome, text) = self.ollama.cross_check(outcome, text + &others);
        Verdict {
            outcome,
            pid: Some(*pid),
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
        // A process that initialised NVML says more than one that only loaded it.
        let nvml = procs
            .iter()
            .filter(|(_, p)| p.nvml_initialised)
            .chain(&procs)
            .find_map(|(_, p)| Some((p.nvml.as_ref()?, p.nvml_initialised)));
        let note = match nvml {
            Some(((_, Some(Class::Shim)), true)) => "; NVML shim initialised".to_string(),
            Some(((path, Some(Class::Shim)), false)) => {
                format!("; the NVML shim {path} was loaded but never initialised")
            }
            Some(((path, class), _)) => format!(
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
