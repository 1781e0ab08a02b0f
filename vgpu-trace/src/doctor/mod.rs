//! `vgpu-trace doctor`: checks a shim installation the way ld.so and Ollama will see it. Each
//! check passes, warns or fails, with its evidence and, when it fails, the fix.
mod checks;
mod scan;
pub mod surfaces;

use serde::Serialize;

use crate::loader::classify::ShimSet;
use crate::loader::elf::ElfFacts;
use crate::loader::fs::Fs;
use crate::loader::ldcache::LdCache;
use crate::loader::platform::Platform;

pub use scan::{LibFile, Scan};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub summary: String,
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(id: &'static str, status: Status, summary: impl Into<String>) -> Self {
        Self {
            id,
            status,
            summary: summary.into(),
            evidence: Vec::new(),
            fix: None,
        }
    }

    fn evidence(mut self, lines: impl IntoIterator<Item = String>) -> Self {
        self.evidence.extend(lines);
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// An Ollama installation: the binary and its library dirs.
#[derive(Clone, Debug)]
pub struct Ollama {
    pub exe: String,
    /// `lib/ollama`.
    pub lib_dir: String,
    /// `lib/ollama/cuda_vNN` dirs holding a `libggml-cuda.so`.
    pub gpu_dirs: Vec<String>,
}

/// A process whose view is checked (`--pid`): its executable and what it has mapped.
#[derive(Clone, Debug, Default)]
pub struct ProcessView {
    pub pid: u32,
    pub exe: String,
    pub loaded: Vec<(String, Option<String>)>,
}

/// Everything the checks look at; gathered at the edge (files, /proc, the environment).
pub struct Setup<'a> {
    pub fs: &'a dyn Fs,
    pub platform: &'a Platform,
    /// The parsed ld.so.cache, or why it could not be read.
    pub cache: Result<LdCache, String>,
    /// Directories ld.so.conf names.
    pub conf_dirs: Vec<String>,
    pub ld_library_path: Option<String>,
    pub ld_preload: Option<String>,
    /// `/etc/ld.so.preload`, if present.
    pub preload_file: Option<String>,
    pub ollama: Option<Ollama>,
    pub process: Option<ProcessView>,
    /// Shims named by configuration or `--shim`; detection adds the rest.
    pub shims: ShimSet,
    /// Reads ELF facts of a file in the process's view (cached by the caller if it likes).
    pub facts: &'a dyn Fn(&str) -> Option<ElfFacts>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub shims: ShimSet,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
}

pub fn run(mut setup: Setup) -> Report {
    let scan = Scan::new(&setup);
    scan.detect_shims(&mut setup.shims);
    let checks = checks::all(&setup, &scan);
    Report {
        checks,
        shims: setup.shims,
    }
}
