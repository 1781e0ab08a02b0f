//! The eBPF backend: loads the programs, patches in this kernel's layouts, attaches the
//! tracepoints and `dl*` uprobes, and decodes the ring buffer into raw events.
mod api;
mod btf;
mod libs;
mod tracefs;

use std::{
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        RawTracePoint, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use vgpu_trace_common::{DlFunc, error_index, names, offsets};

pub use self::libs::dl_libraries;
use crate::event::{RawEvent, decode};

/// How to load the programs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Trace every process, not just followed ones.
    pub follow_all: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Stop a process that opens an unarmed CUDA/NVML library until its API probes are on.
    pub stop_to_arm: bool,
}

/// Failure counters kept by the kernel side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelErrors {
    /// Records lost because the ring buffer was full.
    pub lost: u64,
    pub no_scratch: u64,
    pub follow_map_full: u64,
}

pub struct EbpfBackend {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Files whose `dl*` functions are probed.
    probed: Vec<PathBuf>,
    /// Files (device, inode) whose CUDA/NVML discovery functions were looked at.
    api_probed: Vec<(u64, u64)>,

    /// Records that did not decode (a bug if ever non-zero).
    pub undecodable: u64,
}

/// What the probes need to know about this kernel.
struct Layout {
    globals: Vec<(&'static str, u32)>,
}

fn read_layout(tracefs: &Path) -> anyhow::Result<Layout> {
    let mut globals = Vec::new();
    let field = |cat: &str, tp: &str, name: &str| -> anyhow::Result<Option<u32>> {
        Ok(tracefs::read_format(tracefs, cat, tp)?
            .get(name)
            .map(|f| f.offset))
    };
    let required = |cat: &str, tp: &str, name: &str| -> anyhow::Result<u32> {
        field(cat, tp, name)?.ok_or_else(|| anyhow!("tracepoint {cat}/{tp} has no field {name}"))
    };
    globals.push((
        "EXEC_FILENAME_OFF",
        required("sched", "sched_process_exec", "filename")?,
    ));
    globals.push((
        "EXEC_OLD_PID_OFF",
        required("sched", "sched_process_exec", "old_pid")?,
    ));
    globals.push((
        "EXIT_GROUP_DEAD_OFF",
        field("sched", "sched_process_exit", "group_dead")?.unwrap_or(offsets::UNKNOWN),
    ));
    for (tp, names) in [
        (
            "execve",
            ["EXECVE_FILENAME_OFF", "EXECVE_ARGV_OFF", "EXECVE_ENVP_OFF"],
        ),
        (
            "execveat",
            [
                "EXECVEAT_FILENAME_OFF",
                "EXECVEAT_ARGV_OFF",
                "EXECVEAT_ENVP_OFF",
            ],
        ),
    ] {
        let enter = format!("sys_enter_{tp}");
        for (field, global) in ["filename", "argv", "envp"].into_iter().zip(names) {
            globals.push((global, required("syscalls", &enter, field)?));
        }
    }
    globals.push((
        "EXEC_RET_OFF",
        required("syscalls", "sys_exit_execve", "ret")?,
    ));
    for (global, tp, name) in [
        ("OPENAT_FILENAME_OFF", "sys_enter_openat", "filename"),
        ("OPENAT_FLAGS_OFF", "sys_enter_openat", "flags"),
        ("MMAP_LEN_OFF", "sys_enter_mmap", "len"),
        ("MMAP_PROT_OFF", "sys_enter_mmap", "prot"),
        ("MMAP_FD_OFF", "sys_enter_mmap", "fd"),
        ("CLOSE_FD_OFF", "sys_enter_close", "fd"),
        ("SYS_RET_OFF", "sys_exit_openat", "ret"),
    ] {
        globals.push((global, required("syscalls", tp, name)?));
    }

    let btf = std::fs::read("/sys/kernel/btf/vmlinux").context(
        "reading kernel BTF (/sys/kernel/btf/vmlinux); the kernel needs CONFIG_DEBUG_INFO_BTF",
    )?;
    let tgid = btf::member_offset(&btf, "task_struct", "tgid")
        .context("finding task_struct.tgid in kernel BTF")?;
    globals.push(("TASK_TGID_OFF", tgid));
    match btf::member_offset(&btf, "task_struct", "exit_code") {
        Ok(off) => globals.push(("TASK_EXIT_CODE_OFF", off)),
        Err(e) => tracing::warn!("exit codes will be unknown: {e}"),
    }
    Ok(Layout { globals })
}

/// Fails early, with the missing privilege named, when BPF cannot work.
fn check_privileges() -> anyhow::Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
    bail!(
        "tracing needs root: loading BPF programs and uprobes requires {} (or CAP_SYS_ADMIN); \
         run it with sudo",
        missing.join(" and ")
    )
}

fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (kernels since 5.11 do not need it)");
    }
}

impl EbpfBackend {
    /// Loads and attaches everything except the `dl*` uprobes (see [`Self::probe_libraries`]).
    pub fn load(opts: &Options) -> anyhow::Result<Self> {
        check_privileges()?;
        raise_memlock_limit();
        let tracefs = tracefs::ensure_mounted()?;
        let layout = read_layout(&tracefs)?;

        let follow_all = u32::from(opts.follow_all);
        let stop_to_arm = u32::from(opts.stop_to_arm);
        let self_tgid = std::process::id();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .override_global(names::FOLLOW_ALL, &follow_all, true)
            .override_global(names::SELF_TGID, &self_tgid, true)
            .override_global(names::STOP_TO_ARM, &stop_to_arm, true);
        for (name, value) in &layout.globals {
            loader.override_global(name, value, true);
        }
        let mut ebpf = loader
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/vgpu-trace"
            )))
            .map_err(|e| refused(e.into()))
            .context("loading the eBPF programs")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!("eBPF logger unavailable: {e}");
                None
            }
        };

        for (category, name) in [
            ("sched", "sched_process_exec"),
            ("sched", "sched_process_exit"),
            ("syscalls", "sys_enter_execve"),
            ("syscalls", "sys_enter_execveat"),
            ("syscalls", "sys_exit_execve"),
            ("syscalls", "sys_exit_execveat"),
            ("syscalls", "sys_enter_openat"),
            ("syscalls", "sys_exit_openat"),
            ("syscalls", "sys_enter_mmap"),
            ("syscalls", "sys_exit_mmap"),
            ("syscalls", "sys_enter_close"),
        ] {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|e| refused(e.into()))
                .with_context(|| format!("loading {name}"))?;
            prog.attach(category, name)
                .with_context(|| format!("attaching to tracepoint {category}/{name}"))?;
        }
        // openat2 exists since 5.6; ld.so does not use it, so its absence costs nothing.
        for name in ["sys_enter_openat2", "sys_exit_openat2"] {
            let prog: &mut TracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|e| refused(e.into()))
                .with_context(|| format!("loading {name}"))?;
            if let Err(e) = prog.attach("syscalls", name) {
                tracing::debug!("{name} not attached: {e}");
            }
        }
        let fork: &mut RawTracePoint = program(&mut ebpf, "sched_process_fork")?;
        fork.load()
            .map_err(|e| refused(e.into()))
            .context("loading sched_process_fork")?;
        fork.attach("sched_process_fork")
            .context("attaching to raw tracepoint sched_process_fork")?;
        for name in [
            "dl_enter",
            "dl_return",
            "dlerror_return",
            "api_enter",
            "api_return",
        ] {
            let prog: &mut UProbe = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|e| refused(e.into()))
                .with_context(|| format!("loading {name}"))?;
        }

        let events = RingBuf::try_from(
            ebpf.take_map(names::EVENTS)
                .ok_or_else(|| anyhow!("map {} missing from the eBPF object", names::EVENTS))?,
        )?;
        Ok(Self {
            ebpf,
            events,
            logger,
            probed: Vec::new(),
            api_probed: Vec::new(),
            undecodable: 0,
        })
    }

    /// Puts the `dl*` uprobes on each library not probed yet. Returns how many were new.
    pub fn probe_libraries(&mut self, libs: &[PathBuf]) -> anyhow::Result<usize> {
        let mut added = 0;
        for lib in libs {
            if self.probed.iter().any(|p| same_file(p, lib)) {
                continue;
            }
            let mut any = false;
            for func in DlFunc::ALL {
                let point = || UProbeAttachPoint {
                    location: UProbeAttachLocation::Symbol(func.symbol()),
                    cookie: Some(func as u64),
                };
                let enter: &mut UProbe = program(&mut self.ebpf, "dl_enter")?;
                match enter.attach(point(), lib, UProbeScope::AllProcesses) {
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(
                            "{} has no probe-able {}: {e}",
                            lib.display(),
                            func.symbol()
                        );
                        continue;
                    }
                }
                let ret: &mut UProbe = program(&mut self.ebpf, "dl_return")?;
                ret.attach(point(), lib, UProbeScope::AllProcesses)
                    .with_context(|| {
                        format!("uretprobe on {} in {}", func.symbol(), lib.display())
                    })?;
                any = true;
            }
            if !any {
                tracing::debug!("{} exports no dl* function; not probed", lib.display());
                continue;
            }
            let dlerror: &mut UProbe = program(&mut self.ebpf, "dlerror_return")?;
            if let Err(e) = dlerror.attach("dlerror", lib, UProbeScope::AllProcesses) {
                tracing::warn!("no dlerror probe in {}: {e}", lib.display());
            }
            tracing::debug!("probing dl* in {}", lib.display());
            self.probed.push(lib.clone());
            added += 1;
        }
        if self.probed.is_empty() {
            bail!("found no C library exporting dlopen to probe");
        }
        Ok(added)
    }

    pub fn probed_libraries(&self) -> &[PathBuf] {
        &self.probed
    }

    /// Follows `tgid` (and, through the fork tracepoint, everything it starts from now on).
    pub fn follow(&mut self, tgid: u32) -> anyhow::Result<()> {
        let mut map: HashMap<_, u32, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(names::FOLLOWED)
                .ok_or_else(|| anyhow!("map {} missing", names::FOLLOWED))?,
        )?;
        map.insert(tgid, 1, 0)
            .with_context(|| format!("following process {tgid}"))
    }

    pub fn errors(&self) -> anyhow::Result<KernelErrors> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(names::ERRORS)
                .ok_or_else(|| anyhow!("map {} missing", names::ERRORS))?,
        )?;
        let sum = |i: u32| -> anyhow::Result<u64> { Ok(map.get(&i, 0)?.iter().sum()) };
        Ok(KernelErrors {
            lost: sum(error_index::RINGBUF_FULL)?,
            no_scratch: sum(error_index::NO_SCRATCH)?,
            follow_map_full: sum(error_index::FOLLOW_MAP_FULL)?,
        })
    }

    /// Decodes every record waiting in the ring buffer into `out`.
    pub fn drain(&mut self, out: &mut Vec<RawEvent>) {
        while let Some(item) = self.events.next() {
            match decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    self.undecodable += 1;
                    tracing::warn!("dropping an undecodable record: {e}");
                }
            }
        }
    }

    pub fn events_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    pub fn logger_fd(&self) -> Option<RawFd> {
        self.logger.as_ref().map(|l| l.as_raw_fd())
    }

    /// Forwards pending kernel-side log lines to `tracing`.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    Ok(prog.try_into()?)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (crate::procfs::file_id(a), crate::procfs::file_id(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Turns a permission error anywhere in the chain into a message that names the privilege.
fn refused(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|c| c == libc::EPERM || c == libc::EACCES)
    }) || format!("{err:#}").contains("Operation not permitted");
    if denied {
        err.context(
            "the kernel refused BPF: loading programs needs CAP_BPF and CAP_PERFMON \
             (run as root), and kernel.unprivileged_bpf_disabled or a security module may forbid it",
        )
    } else {
        err
    }
}
