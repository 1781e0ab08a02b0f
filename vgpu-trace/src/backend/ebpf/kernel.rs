//! What this kernel's BPF can do, read from the names in its BTF (what it was built with, no
//! test program loaded), and what the backend makes of it: how uprobes attach, or why eBPF
//! cannot trace here.
use vgpu_trace_common::{DLERROR_COOKIE, DlFunc, api::SPECS, programs};

use super::btf::Btf;

/// The BPF facilities the backend uses or would use.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Support {
    /// `uname -r`.
    pub release: String,
    /// /sys/kernel/btf/vmlinux: member offsets come from it (5.4+, CONFIG_DEBUG_INFO_BTF).
    pub btf: bool,
    /// The BPF ring buffer, the one event stream (5.8+).
    pub ring_buffer: bool,
    /// Raw tracepoints, for exec, fork, exit and syscalls (4.17+).
    pub raw_tracepoints: bool,
    /// uprobe_multi links: one link and one release for every probe in a file (6.6+).
    pub uprobe_multi: bool,
    /// Attach cookies: one program serves every function (5.15+).
    pub attach_cookie: bool,
    /// `bpf_loop` (5.17+): not needed, the path scan is bounded by construction.
    pub bpf_loop: bool,
}

/// How the uprobe programs attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMethod {
    /// One uprobe_multi link per program and file; the function in the cookie.
    UprobeMulti,
    /// A perf-event uprobe per function; the function in the cookie.
    PerfEventCookie,
    /// A perf-event uprobe per function, and a program per function that knows its own.
    PerfEventPerFunction,
}

/// The uprobe program families: each has a program per attach method (and, without
/// cookies, per function).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    DlEnter,
    DlReturn,
    ApiEnter,
    ApiReturn,
}

impl Family {
    #[cfg(test)]
    const ALL: [Self; 4] = [
        Self::DlEnter,
        Self::DlReturn,
        Self::ApiEnter,
        Self::ApiReturn,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl Support {
    /// Reads what the running kernel offers; `btf` is its parsed BTF, when it has one.
    pub fn of(btf: Option<&Btf<'_>>) -> Self {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(btf) = btf else {
            return Self {
                release,
                ..Self::default()
            };
        };
        let func = |name| btf.has_enum_value("bpf_func_id", name);
        Self {
            release,
            btf: true,
            ring_buffer: btf.has_enum_value("bpf_map_type", "BPF_MAP_TYPE_RINGBUF"),
            raw_tracepoints: btf.has_enum_value("bpf_prog_type", "BPF_PROG_TYPE_RAW_TRACEPOINT"),
            uprobe_multi: btf.has_enum_value("bpf_attach_type", "BPF_TRACE_UPROBE_MULTI"),
            attach_cookie: func("BPF_FUNC_get_attach_cookie"),
            bpf_loop: func("BPF_FUNC_loop"),
        }
    }

    /// How uprobes attach here, or why eBPF cannot trace on this kernel (one line).
    pub fn method(&self) -> Result<AttachMethod, String> {
        let missing = self.missing_required();
        if !missing.is_empty() {
            return Err(format!(
                "kernel {} lacks {} (5.10 or newer has them)",
                self.release,
                missing.join(" and ")
            ));
        }
        Ok(if self.uprobe_multi {
            AttachMethod::UprobeMulti
        } else if self.attach_cookie {
            AttachMethod::PerfEventCookie
        } else {
            AttachMethod::PerfEventPerFunction
        })
    }

    fn missing_required(&self) -> Vec<&'static str> {
        lacking([
            (self.btf, "BTF (/sys/kernel/btf/vmlinux)"),
            (self.ring_buffer, "the BPF ring buffer"),
            (self.raw_tracepoints, "raw tracepoints"),
        ])
    }

    /// Everything the kernel lacks, required or not, for `doctor`.
    pub fn missing(&self) -> Vec<&'static str> {
        lacking([
            (self.btf, "BTF"),
            (self.ring_buffer, "ring buffer"),
            (self.raw_tracepoints, "raw tracepoints"),
            (self.uprobe_multi, "uprobe_multi"),
            (self.attach_cookie, "attach cookies"),
            (self.bpf_loop, "bpf_loop"),
        ])
    }
}

/// The names of what is not had.
fn lacking<const N: usize>(facilities: [(bool, &'static str); N]) -> Vec<&'static str> {
    facilities
        .into_iter()
        .filter(|(has, _)| !has)
        .map(|(_, what)| what)
        .collect()
}

impl AttachMethod {
    /// The method named by `VGPU_TRACE_ATTACH` (`uprobe-multi`, `perf-event-cookie`,
    /// `perf-event-per-function`): the tests run every method on one kernel with it, and a
    /// user can step around a kernel whose newer links misbehave.
    pub fn forced() -> Option<Self> {
        match std::env::var("VGPU_TRACE_ATTACH").ok()?.as_str() {
            "uprobe-multi" => Some(Self::UprobeMulti),
            "perf-event-cookie" => Some(Self::PerfEventCookie),
            "perf-event-per-function" => Some(Self::PerfEventPerFunction),
            _ => None,
        }
    }

    /// In words, for notices and `doctor`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UprobeMulti => "uprobe_multi links",
            Self::PerfEventCookie => "perf-event uprobes with attach cookies",
            Self::PerfEventPerFunction => "perf-event uprobes, a program per function",
        }
    }

    /// Why this method, for `doctor`.
    pub fn why(self) -> &'static str {
        match self {
            Self::UprobeMulti => "the kernel has uprobe_multi (6.6+)",
            Self::PerfEventCookie => "no uprobe_multi (6.6+), but attach cookies (5.15+)",
            Self::PerfEventPerFunction => "no uprobe_multi (6.6+) nor attach cookies (5.15+)",
        }
    }

    /// Whether a link holds one probe (its release then waits for a grace period of its own).
    pub fn per_probe_links(self) -> bool {
        self != Self::UprobeMulti
    }

    /// Every uprobe program this method loads.
    pub fn programs(self) -> Vec<&'static str> {
        match self {
            Self::UprobeMulti => programs::MULTI.to_vec(),
            Self::PerfEventCookie => programs::ONE.to_vec(),
            Self::PerfEventPerFunction => {
                let mut names: Vec<&str> = DlFunc::CALLS.map(programs::dl_enter).to_vec();
                names.extend(
                    DlFunc::CALLS
                        .iter()
                        .map(|&f| f as u32)
                        .chain([DLERROR_COOKIE])
                        .filter_map(programs::dl_return),
                );
                names.push(programs::ONE[Family::ApiEnter.index()]);
                names.extend((1..=SPECS.len() as u32).filter_map(programs::api_return));
                names
            }
        }
    }

    /// The program that serves function `id` of `family` (a `DlFunc`, `DLERROR_COOKIE`, or an
    /// `api::SPECS` id), and whether it reads `id` from the attach cookie.
    pub fn program(self, family: Family, id: u32) -> Option<(&'static str, bool)> {
        let shared = |set: [&'static str; 4]| Some((set[family.index()], true));
        match (self, family) {
            (Self::UprobeMulti, _) => shared(programs::MULTI),
            (Self::PerfEventCookie, _) => shared(programs::ONE),
            // API entries save the arguments whatever the function: no id needed.
            (Self::PerfEventPerFunction, Family::ApiEnter) => {
                Some((programs::ONE[Family::ApiEnter.index()], false))
            }
            (Self::PerfEventPerFunction, Family::DlEnter) => {
                Some((programs::dl_enter(DlFunc::from_u32(id)?), false))
            }
            (Self::PerfEventPerFunction, Family::DlReturn) => {
                Some((programs::dl_return(id)?, false))
            }
            (Self::PerfEventPerFunction, Family::ApiReturn) => {
                Some((programs::api_return(id)?, false))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support(uprobe_multi: bool, attach_cookie: bool) -> Support {
        Support {
            release: "x".into(),
            btf: true,
            ring_buffer: true,
            raw_tracepoints: true,
            uprobe_multi,
            attach_cookie,
            bpf_loop: false,
        }
    }

    #[test]
    fn the_method_follows_what_the_kernel_has() {
        assert_eq!(support(true, true).method(), Ok(AttachMethod::UprobeMulti));
        assert_eq!(
            support(false, true).method(),
            Ok(AttachMethod::PerfEventCookie)
        );
        assert_eq!(
            support(false, false).method(),
            Ok(AttachMethod::PerfEventPerFunction)
        );
        let none = Support {
            release: "4.19.0".into(),
            ..Support::default()
        };
        let why = none.method().unwrap_err();
        assert!(why.contains("4.19.0") && why.contains("BTF"), "{why}");
        assert_eq!(none.missing().len(), 6);
    }

    #[test]
    fn every_function_has_a_program_in_every_method() {
        let methods = [
            AttachMethod::UprobeMulti,
            AttachMethod::PerfEventCookie,
            AttachMethod::PerfEventPerFunction,
        ];
        for method in methods {
            let loaded = method.programs();
            let ids = |family| -> Vec<u32> {
                match family {
                    Family::DlEnter => DlFunc::CALLS.map(|f| f as u32).to_vec(),
                    Family::DlReturn => {
                        let mut ids = DlFunc::CALLS.map(|f| f as u32).to_vec();
                        ids.push(DLERROR_COOKIE);
                        ids
                    }
                    Family::ApiEnter | Family::ApiReturn => (1..=SPECS.len() as u32).collect(),
                }
            };
            for family in Family::ALL {
                for id in ids(family) {
                    let (name, cookie) = method.program(family, id).expect("a program");
                    assert!(loaded.contains(&name), "{method:?} does not load {name}");
                    assert_eq!(cookie, method != AttachMethod::PerfEventPerFunction);
                }
            }
        }
        assert_eq!(AttachMethod::PerfEventPerFunction.programs().len(), 33);
    }
}
