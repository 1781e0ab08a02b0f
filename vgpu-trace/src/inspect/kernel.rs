//! `doctor`'s kernel section: which backend this kernel gets and why, what its BPF lacks, and,
//! as root, what loading and attaching every program really costs (a dry run of a session's
//! arming: the programs loaded, the tracepoints and the host C library's `dl*` probes
//! attached, then everything released).
use std::time::Instant;

use serde::Serialize;

use crate::backend::ebpf::{
    self, EbpfBackend,
    kernel::{AttachMethod, Support},
    load::ProgramLoad,
};
use crate::doctor::{Check, Status};

#[derive(Debug, Serialize)]
pub struct KernelReport {
    #[serde(flatten)]
    pub support: Support,
    /// "ebpf", or "ptrace" where eBPF cannot trace.
    pub backend: &'static str,
    /// How uprobes attach (eBPF only).
    pub method: Option<AttachMethod>,
    /// Why that backend and method, in words.
    pub why: String,
    /// What the kernel lacks, required or not.
    pub missing: Vec<&'static str>,
    /// Each program's load, as a session makes it (root only).
    pub programs: Vec<ProgramLoad>,
    /// Loading the programs and attaching the tracepoints; then attaching the `dl*` probes.
    pub load_ms: Option<f64>,
    pub attach_ms: Option<f64>,
    /// Why the programs were not loaded (no root), or why they failed to.
    pub not_loaded: Option<String>,
}

impl KernelReport {
    /// The program the verifier worked hardest on.
    pub fn worst(&self) -> Option<&ProgramLoad> {
        self.programs
            .iter()
            .filter(|p| p.verified_insns.is_some())
            .max_by_key(|p| p.verified_insns)
    }

    /// Whether sessions on this kernel trace with eBPF.
    pub fn ebpf(&self) -> bool {
        self.backend == "ebpf"
    }
}

/// Whether [`examine`] loads the programs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// As root: everything loaded, attached and released (`doctor --kernel`).
    IfRoot,
    /// Only what the kernel's BTF says (`doctor`'s other checks run without root).
    No,
}

/// Looks at the running kernel, and loads and attaches everything and releases it if asked.
pub fn examine(load: Load) -> KernelReport {
    let support = ebpf::kernel_support();
    let planned = AttachMethod::forced().map_or_else(|| support.method(), Ok);
    let mut report = KernelReport {
        backend: if planned.is_ok() { "ebpf" } else { "ptrace" },
        method: planned.as_ref().ok().copied(),
        why: match &planned {
            Ok(method) => method.why().to_string(),
            Err(why) => why.clone(),
        },
        missing: support.missing(),
        support,
        programs: Vec::new(),
        load_ms: None,
        attach_ms: None,
        not_loaded: None,
    };
    if planned.is_err() {
        return report;
    }
    let root = nix::unistd::geteuid().is_root();
    if load == Load::No || !root {
        report.not_loaded = Some(
            if root {
                "`vgpu-trace doctor --kernel` loads them"
            } else {
                "loading them needs root: `sudo vgpu-trace doctor --kernel`"
            }
            .into(),
        );
        return report;
    }
    let started = Instant::now();
    let loaded = EbpfBackend::load(&ebpf::Options {
        follow_all: false,
        ring_bytes: crate::session::DEFAULT_RING_BYTES,
        stop_to_arm: false,
        follow_cgroup: None,
        follow_comms: Vec::new(),
        verifier_deadline: None,
        recount: true,
        stopping: || false,
    });
    let (mut backend, _events) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            report.backend = "ptrace";
            report.not_loaded = Some(ebpf::Refused::one_line(&e));
            return report;
        }
    };
    report.load_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    report.programs = backend.program_loads().to_vec();
    let attached = Instant::now();
    if let Err(e) = backend.probe_libraries(&ebpf::dl_libraries(&[])) {
        report.not_loaded = Some(format!("attaching the dl* probes: {e:#}"));
    }
    report.attach_ms = Some(attached.elapsed().as_secs_f64() * 1000.0);
    backend.release();
    report
}

impl KernelReport {
    /// As one of `doctor`'s checks: a pass with eBPF, a warning with ptrace (which works, at
    /// a cost); a failure only when the programs failed to load where eBPF should work.
    pub fn check(&self) -> Check {
        let release = &self.support.release;
        let (status, summary) = match self.method {
            None => (
                Status::Warn,
                format!("{release}: ptrace, not eBPF: {}", self.why),
            ),
            // Refused, or attached only in part, where eBPF should work.
            Some(method)
                if !self.ebpf() || (self.load_ms.is_some() && self.not_loaded.is_some()) =>
            {
                (
                    Status::Fail,
                    format!(
                        "{release}: eBPF with {} failed: {}",
                        method.describe(),
                        self.not_loaded.as_deref().unwrap_or("")
                    ),
                )
            }
            Some(method) => (
                Status::Pass,
                format!("{release}: eBPF with {} ({})", method.describe(), self.why),
            ),
        };
        let mut evidence = vec![match self.missing.as_slice() {
            [] => "has BTF, ring buffer, raw tracepoints, uprobe_multi, attach cookies, bpf_loop"
                .to_string(),
            missing => format!("lacks {}", missing.join(", ")),
        }];
        if let Some(worst) = self.worst() {
            let n = worst.verified_insns.unwrap_or(0);
            evidence.push(format!(
                "{} programs loaded and attached in {:.1} ms; the verifier's largest: {} at {} \
                 of {} instructions ({:.1} %)",
                self.programs.len(),
                self.load_ms.unwrap_or(0.0) + self.attach_ms.unwrap_or(0.0),
                worst.name,
                n,
                ebpf::VERIFIER_BUDGET,
                100.0 * f64::from(n) / f64::from(ebpf::VERIFIER_BUDGET)
            ));
        } else if !self.programs.is_empty() {
            evidence.push(format!(
                "{} programs loaded and attached in {:.1} ms (this kernel does not count the \
                 verifier's instructions: 5.16+ does)",
                self.programs.len(),
                self.load_ms.unwrap_or(0.0) + self.attach_ms.unwrap_or(0.0)
            ));
        } else if let Some(why) = &self.not_loaded {
            evidence.push(format!("programs not loaded: {why}"));
        }
        Check {
            id: "kernel",
            status,
            summary,
            evidence,
            fix: (status != Status::Pass).then(|| {
                "a kernel with BTF (/sys/kernel/btf/vmlinux), the BPF ring buffer and raw \
                 tracepoints (5.10 or newer) traces with eBPF; until then sessions trace with \
                 ptrace"
                    .to_string()
            }),
        }
    }
}
