//! For shim authors' own test suites: record a command (root) or load a record (anyone), then
//! assert on it with the same rules `vgpu-trace check` reads, failing with a readable report.
//!
//! ```
//! use vgpu_trace::{model::Outcome, testing::Trace};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A record of `dl-fixture scenario`, made with `vgpu-trace record -o FILE -- CMD`
//! // (or `Trace::record(&["CMD", ...])` as root).
//! let trace = Trace::from_record("tests/data/dl-fixture.vgt")?;
//! assert!(trace.complete);
//! // The fixture never asks for CUDA; an Ollama trace would say `shim-used` or why not.
//! assert_eq!(trace.verdict().outcome, Outcome::NoCuda);
//! trace.assert(r#"
//!     [[expect]]
//!     dlopen = "libm.so.6"
//!     ok = true
//!
//!     [[expect]]
//!     dlsym = "vgpu_fixture_no_such_symbol"
//!     ok = false
//!
//!     [[forbid]]
//!     dlopen = "libm.so.6"
//!     ok = false
//! "#);
//! // A rule that does not hold reports it with the nearest evidence.
//! let report = trace.check(r#"
//!     [[expect]]
//!     dlopen = "libvgpu-fixture-missing.so.1"
//!     ok = true
//! "#).unwrap_err();
//! assert!(report.contains("FAIL  expected: dlopen libvgpu-fixture-missing.so.1 ok=true"));
//! assert!(report.contains("cannot open shared object file"));
//! # Ok(())
//! # }
//! ```
use std::path::Path;

use crate::judge::expect::{Expectations, check, report};
use crate::judge::verdict::judge;
use crate::model::Verdict;
use crate::model::{ApiCall, Call, EventKind, Load, TraceEvent};
use crate::replay::{ReplayError, read_events};

pub struct Trace {
    pub events: Vec<TraceEvent>,
    /// The record ends with its summary line (the tracer finished).
    pub complete: bool,
    /// What the session said while tracing (`armed in 40 ms ...`), for [`Trace::record`]:
    /// kept here, not printed.
    pub notices: Vec<String>,
}

impl Trace {
    pub fn from_record(path: impl AsRef<Path>) -> Result<Self, ReplayError> {
        let (events, replayed) = read_events(crate::replay::open(path.as_ref())?)?;
        Ok(Self {
            events,
            complete: replayed.summary.is_some(),
            notices: Vec::new(),
        })
    }

    /// Runs `cmd` under the tracer (root, or CAP_BPF and CAP_PERFMON) and reads its record.
    /// The backend is `VGPU_TRACE_BACKEND`'s (`ebpf` makes a kernel that refuses the programs
    /// an error rather than a silent fall back to ptrace), else `auto`.
    pub fn record(cmd: &[&str]) -> anyhow::Result<Self> {
        // A new private dir per call (random name, mode 0700): parallel tests never share a
        // record, and nobody can put a link where root is about to write.
        let dir = tempfile::Builder::new()
            .prefix("vgpu-trace-testing-")
            .tempdir()?;
        let file = dir.path().join("trace.vgt");
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let cfg = crate::session::Config {
            target: crate::session::Target::Run(cmd.iter().map(|s| s.to_string()).collect()),
            outputs: crate::sink::Outputs {
                format: crate::sink::Format::Jsonl,
                output: Some(std::path::PathBuf::from("/dev/null")),
                record: Some(file.clone()),
                perfetto: None,
                color: crate::sink::ColorChoice::Never,
                view: crate::sink::View::Full,
                custom: None,
            },
            ring_bytes: crate::session::DEFAULT_RING_BYTES,
            shims: Vec::new(),
            shims_config: std::path::PathBuf::from(crate::loader::shims::SHIMS_CONFIG),
            stop_to_arm: true,
            duration: None,
            until: None,
            backend: crate::session::BackendChoice::from_env(),
            logs: Vec::new(),
            notices: crate::session::Notices::collect(notices.clone()),
            watch: false,
        };
        crate::session::trace(cfg)?;
        let mut trace = Self::from_record(&file)?;
        trace.notices = std::mem::take(&mut notices.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(trace)
    }

    pub fn loads(&self) -> impl Iterator<Item = &Load> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Load(l) => Some(l),
            _ => None,
        })
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Call(c) => Some(c),
            _ => None,
        })
    }

    /// Whether discovery used the shim, and why.
    pub fn verdict(&self) -> Verdict {
        judge(&self.events)
    }

    pub fn api_calls(&self) -> impl Iterator<Item = &ApiCall> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Api(a) => Some(a),
            _ => None,
        })
    }

    /// Holds the trace against `vgpu-trace check` rules (TOML); `Err` is the failure report.
    pub fn check(&self, rules: &str) -> Result<(), String> {
        let rules = Expectations::parse(rules).map_err(|e| format!("bad rules: {e}"))?;
        match check(&self.events, &rules) {
            failures if failures.is_empty() => Ok(()),
            failures => Err(report(&failures)),
        }
    }

    /// Like [`Trace::check`], panicking with the report.
    #[track_caller]
    pub fn assert(&self, rules: &str) {
        if let Err(report) = self.check(rules) {
            panic!("trace expectations failed:\n{report}");
        }
    }
}
