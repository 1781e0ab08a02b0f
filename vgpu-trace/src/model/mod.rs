//! The enriched timeline: what the collector produces and every sink consumes.
//! This is also the JSON Lines record schema (see README "Record format").
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vgpu_trace_common::DlFunc;

use crate::text::Text;

mod class;
pub mod codes;
mod ollama;
mod verdict;

pub use class::Class;
pub use ollama::OllamaSays;
pub use verdict::{Outcome, Verdict};

/// Version of the record format written in the header line.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// CLOCK_BOOTTIME nanoseconds (for calls: when the call started).
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The process's name at the time (its comm). Shared: every event of a process has it.
    pub comm: Arc<str>,
    /// Depth in the traced process tree (0 for a root).
    pub depth: u32,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A process that was running before tracing began.
    Attached {
        ppid: u32,
        exe: Option<Text>,
        argv: Vec<Text>,
        env: Vec<Text>,
        /// The container it runs in, as for `Exec`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// `pid` started a new process `child`.
    Spawn {
        child: u32,
    },
    Exec {
        ppid: u32,
        filename: Text,
        argv: Vec<Text>,
        /// argv had more entries than were captured.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        argv_more: bool,
        /// Allowlisted environment entries (`K=V`).
        env: Vec<Text>,
        /// The container it runs in (its runtime's scope, from its cgroup), when it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    ExecFailed {
        filename: Text,
        argv: Vec<Text>,
        errno: i32,
        error: String,
    },
    Exit(ExitStatus),
    Call(Call),
    /// A library ld.so mapped executable, with the search that found it.
    Load(Load),
    /// A CUDA driver or NVML discovery function returned.
    Api(ApiCall),
    /// A line the process wrote to its stdout or stderr (Ollama's log).
    Log(LogLine),
    /// Records the kernel could not deliver (ring buffer full) since the last such event.
    Lost {
        count: u64,
    },
    /// An event type of a later format version, read from a record: skipped on replay, as
    /// the format promises. Never produced or written.
    #[serde(other, skip_serializing)]
    Later,
}

/// A line of a process's output, and what it says if it is one of Ollama's that explain
/// discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: Stream,
    pub text: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama: Option<OllamaSays>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
    /// A log file followed with `attach --log`.
    File = 2,
    /// A unit's journal followed with `attach --journal`.
    Journal = 3,
}

impl Stream {
    pub fn of_fd(fd: u32) -> Option<Self> {
        match fd {
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::File => "file",
            Self::Journal => "journal",
        }
    }
}

/// How a process ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub core_dumped: bool,
    /// The exit was not observed (the process vanished, or its exit record was lost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unseen: bool,
}

impl ExitStatus {
    /// From a kernel wait status (`task_struct.exit_code`).
    pub fn from_wait_status(status: i32) -> Self {
        let signal = status & 0x7f;
        if signal == 0 {
            Self {
                code: Some((status >> 8) & 0xff),
                ..Self::default()
            }
        } else {
            Self {
                signal: Some(signal),
                core_dumped: status & 0x80 != 0,
                ..Self::default()
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    Dlopen,
    Dlmopen,
    Dlsym,
    Dlvsym,
    Dlclose,
}

impl From<DlFunc> for Func {
    fn from(f: DlFunc) -> Self {
        match f {
            DlFunc::Dlopen => Self::Dlopen,
            DlFunc::Dlmopen => Self::Dlmopen,
            DlFunc::Dlsym => Self::Dlsym,
            DlFunc::Dlvsym => Self::Dlvsym,
            DlFunc::Dlclose => Self::Dlclose,
        }
    }
}

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dlopen => "dlopen",
            Self::Dlmopen => "dlmopen",
            Self::Dlsym => "dlsym",
            Self::Dlvsym => "dlvsym",
            Self::Dlclose => "dlclose",
        }
    }

    /// Whether `ret` means success: a non-NULL handle or address, or 0 from dlclose.
    pub fn succeeded(self, ret: u64) -> bool {
        match self {
            Self::Dlclose => ret == 0,
            _ => ret != 0,
        }
    }
}

/// One `dl*` call, from entry to return, with the `dlerror` text of a failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub func: Func,
    /// File (dlopen, dlmopen) or symbol (dlsym, dlvsym); absent for `dlopen(NULL)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Text>,
    /// dlopen/dlmopen mode flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Handle passed in (dlsym, dlvsym, dlclose) or namespace (dlmopen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// Return value; absent when the call never returned while traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// What `dlerror()` said after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Text>,
    /// A successful dlopen: every object mapped during it (the target and its dependencies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gained: Vec<Text>,
    /// Those of `gained` missing from /proc/PID/maps when checked (empty: all there); absent
    /// when the check could not tell: the process was gone, or had since dlclosed something,
    /// exec'd or exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maps_missing: Option<Vec<String>>,
    /// dlopen/dlmopen: the file ld.so loaded (the handle's `l_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Text>,
    /// A failed dlopen: the paths ld.so tried, with why each failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// A failed dlopen whose opens were not watched (`attach` under ptrace): the paths the
    /// resolution model says ld.so tried. A prediction, never an observation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted_probes: Vec<Probe>,
    /// A failed dlopen: the step that failed (`not found`, `wrong ELF class`,
    /// `undefined symbol`, `other`), from dlerror's text or the probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// What that file is (shim, nvidia-driver, ...), when the tracer could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    /// Set when NVIDIA's driver or a bundled copy was loaded although a shim is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The shim, already loaded in this process, that loaded this driver to forward to it
    /// (pass-through): expected, so no warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_by: Option<String>,
}

/// A traced CUDA/NVML call: its return code by name, the values it wrote, its string argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCall {
    pub function: String,
    pub code: i32,
    /// `CUDA_SUCCESS`, `NVML_ERROR_DRIVER_NOT_LOADED`, ...
    pub result: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, u64>,
    /// The symbol asked of cuGetProcAddress, the driver version NVML wrote, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
}

/// Which step of loading a failed dlopen died in.
pub fn failed_step(error: Option<&str>, probes: &[Probe]) -> &'static str {
    match error {
        Some(e) if e.contains("undefined symbol") => "undefined symbol",
        Some(e) if e.contains("wrong ELF class") || e.contains("ELF file") => "wrong ELF class",
        Some(e) if e.contains("cannot open shared object file") => "not found",
        None if !probes.is_empty() && probes.iter().all(|p| p.error == "ENOENT") => "not found",
        _ => "other",
    }
}

impl ApiCall {
    pub fn succeeded(&self) -> bool {
        self.code == 0
    }
}

/// The last component of a path (the whole string if it has no slash).
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A path ld.so tried that did not work, and why (`ENOENT`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub path: Text,
    pub error: String,
}

/// A library mapped into a process: the file, the failed attempts before it, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// The path ld.so opened.
    pub path: Text,
    /// The file name asked for (the path's last component).
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// The dlopen in flight on the loading thread, by the name it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during: Option<Text>,
    /// The object whose DT_NEEDED named it (the executable's for start-up loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_by: Option<String>,
    /// Where it lies: its executable mapping's address, or for a `linked` load ld.so's
    /// `l_addr` (its load bias).
    pub addr: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// As in [`Call`]: the shim forwarding to this driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_by: Option<String>,
    /// What the resolution model predicted, when it is not what ld.so did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<String>,
    /// Seen in ld.so's list of loaded objects, not through its opens (`attach` under
    /// ptrace): `probes` is empty because no open was watched, not because none failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub linked: bool,
    /// For a `linked` load: the paths the resolution model says ld.so tried first, and why
    /// each failed. A prediction, never an observation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted_probes: Vec<Probe>,
}

impl Load {
    pub fn new(path: Text, probes: Vec<Probe>, during: Option<Text>, addr: u64) -> Self {
        let name = file_name(&path.value).to_string();
        Self {
            path,
            name,
            probes,
            during,
            needed_by: None,
            addr,
            class: None,
            warning: None,
            forwarded_by: None,
            predicted: None,
            linked: false,
            predicted_probes: Vec::new(),
        }
    }
}

impl Call {
    /// A call of `func` with nothing known about it yet (entry fields are set by the caller).
    pub fn new(func: Func) -> Self {
        Self {
            func,
            name: None,
            version: None,
            mode: None,
            handle: None,
            ret: None,
            ok: None,
            duration_ns: None,
            error: None,
            probes: Vec::new(),
            predicted_probes: Vec::new(),
            failed_step: None,
            gained: Vec::new(),
            maps_missing: None,
            path: None,
            class: None,
            warning: None,
            forwarded_by: None,
        }
    }
}

/// First line of a JSON Lines record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub tool_version: String,
    pub kernel: String,
    pub host: String,
    pub backend: String,
    /// `run`, `attach` or `system`.
    pub mode: String,
    /// What was traced: the command line or the attach targets.
    pub target: Vec<String>,
    /// Libraries whose `dl*` functions were probed.
    pub probed: Vec<String>,
    /// Shims known when tracing began: `cuda=/opt/vgpu/lib/libvgpu-cuda.so (--shim)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shims: Vec<String>,
}

/// Last line of a record, and the end-of-run report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Raw events received from the backend.
    pub events: u64,
    /// Processes seen (including attached ones).
    pub processes: u64,
    pub calls: u64,
    /// Libraries mapped executable (see `Load`).
    #[serde(default)]
    pub loads: u64,
    /// CUDA/NVML discovery calls seen.
    #[serde(default)]
    pub api_calls: u64,
    /// Records the kernel could not deliver.
    pub lost: u64,
    /// Records that arrived but could not be decoded.
    pub undecodable: u64,
    /// Runs of the kernel-side programs the kernel skipped, because the same program was
    /// already running on that CPU, preempted (kernels that preempt BPF programs, as 7.x's
    /// with lazy preemption) or interrupted. Counted for every process on the machine: the
    /// traced ones' events among them are missing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u64,
    /// Whether discovery used the shim, and why (see `judge::verdict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `dlopen` mode flags as glibc spells them.
pub fn dlopen_mode(mode: u32) -> String {
    const FLAGS: [(u32, &str); 4] = [
        (0x4, "RTLD_NOLOAD"),
        (0x8, "RTLD_DEEPBIND"),
        (0x100, "RTLD_GLOBAL"),
        (0x1000, "RTLD_NODELETE"),
    ];
    let mut parts: Vec<String> = match mode & 0x3 {
        0 => vec![],
        1 => vec!["RTLD_LAZY".into()],
        2 => vec!["RTLD_NOW".into()],
        _ => vec!["RTLD_LAZY|RTLD_NOW".into()],
    };
    let mut known = 0x3;
    for (bit, name) in FLAGS {
        known |= bit;
        if mode & bit != 0 {
            parts.push(name.into());
        }
    }
    if mode & !known != 0 {
        parts.push(format!("{:#x}", mode & !known));
    }
    if parts.is_empty() {
        parts.push("0".into());
    }
    parts.join("|")
}

/// Signal names for exit reports.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_glibc() {
        assert_eq!(dlopen_mode(1), "RTLD_LAZY");
        assert_eq!(dlopen_mode(2 | 0x100), "RTLD_NOW|RTLD_GLOBAL");
        assert_eq!(dlopen_mode(0x100), "RTLD_GLOBAL");
        assert_eq!(dlopen_mode(2 | 0x40000), "RTLD_NOW|0x40000");
    }

    #[test]
    fn wait_status_decodes() {
        assert_eq!(ExitStatus::from_wait_status(3 << 8).code, Some(3));
        let killed = ExitStatus::from_wait_status(9);
        assert_eq!((killed.code, killed.signal), (None, Some(9)));
        assert!(ExitStatus::from_wait_status(0x80 | 11).core_dumped);
        assert_eq!(signal_name(9), "SIGKILL");
    }

    #[test]
    fn events_round_trip_through_json() {
        let ev = TraceEvent {
            ts_ns: 1,
            pid: 2,
            tid: 3,
            comm: "x".into(),
            depth: 0,
            kind: EventKind::Call(Call {
                name: Some("libm.so.6".into()),
                mode: Some(2),
                ret: Some(0x1234),
                ok: Some(true),
                duration_ns: Some(5),
                path: Some("/lib/x86_64-linux-gnu/libm.so.6".into()),
                class: Some(Class::System),
                ..Call::new(Func::Dlopen)
            }),
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains(r#""type":"call""#), "{json}");
        assert!(json.contains(r#""func":"dlopen""#), "{json}");
        assert_eq!(serde_json::from_str::<TraceEvent>(&json).unwrap(), ev);
    }
}
