//! The eBPF backend: loads the programs, patches in this kernel's layouts, attaches the
//! tracepoints and `dl*` uprobes, and decodes the ring buffer into raw events.
mod api;
mod arming;
mod btf;
mod guard;
mod libs;

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        RawTracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use vgpu_trace_common::{DLERROR_COOKIE, DlFunc, error_index, names};

pub use self::arming::{Arming, Holds};
use self::guard::Guard;
pub use self::guard::HOLD_LIMIT_NS;
pub use self::libs::{dl_libraries, provides_dl};
use crate::event::{RawEvent, decode};
use crate::failure::{FailAs as _, Failure};
use crate::files::{self, FileId};

/// How to load the programs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Trace every process, not just followed ones.
    pub follow_all: bool,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Stop a process that opens an unarmed CUDA/NVML library until its API probes are on
    /// (never longer than [`HOLD_LIMIT_NS`], and never past the tracer's death).
    pub stop_to_arm: bool,
    /// A cgroup (v2 id, depth) whose processes are followed from their exec.
    pub follow_cgroup: Option<(u64, u32)>,
}

/// Failure counters kept by the kernel side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelErrors {
    /// Records lost because the ring buffer was full.
    pub lost: u64,
    pub no_scratch: u64,
    pub follow_map_full: u64,
    /// New CUDA/NVML libraries not announced for arming (their ring was full).
    pub arm_ring_full: u64,
    /// Writes to stdout/stderr not kept: their process was over its output budget.
    pub output_over_budget: u64,
}

/// What the event loop reads: the ring buffer, the kernel's failure counters, its log lines.
pub struct EventStream {
    events: RingBuf<MapData>,
    errors: PerCpuArray<MapData, u64>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Records that did not decode (a bug if ever non-zero).
    pub undecodable: u64,
}

/// The programs and their probes: set up at start, then handed to [`Arming`], which puts
/// probes on new libraries while the event loop runs, and finally released.
pub struct EbpfBackend {
    ebpf: Ebpf,
    /// Every link made (tracepoints and uprobe_multi), taken from its program so that
    /// [`Self::release`] can drop them side by side.
    links: Vec<Box<dyn Send>>,
    /// Files whose `dl*` functions are probed, and their identities.
    probed: Vec<PathBuf>,
    probed_ids: Vec<FileId>,
    /// Files whose CUDA/NVML discovery functions were looked at.
    api_probed: Vec<FileId>,
    /// Releases what the kernel holds if the tracer cannot; none when nothing is held.
    guard: Option<Guard>,
}

/// What the probes need to know about this kernel.
struct Layout {
    globals: Vec<(&'static str, u32)>,
}

/// Kernel members the programs read, by the global that carries each offset. Required ones
/// fail the session when missing; the others degrade one fact.
const MEMBERS: [(&str, &str, &str, bool); 18] = [
    ("TASK_TGID_OFF", "task_struct", "tgid", true),
    ("BINPRM_FILENAME_OFF", "linux_binprm", "filename", true),
    ("TASK_EXIT_CODE_OFF", "task_struct", "exit_code", false),
    ("TASK_SIGNAL_OFF", "task_struct", "signal", false),
    ("SIGNAL_LIVE_OFF", "signal_struct", "live", false),
    ("TASK_MM_OFF", "task_struct", "mm", false),
    ("MM_ARG_START_OFF", "mm_struct", "arg_start", false),
    ("MM_ARG_END_OFF", "mm_struct", "arg_end", false),
    ("MM_ENV_START_OFF", "mm_struct", "env_start", false),
    ("MM_ENV_END_OFF", "mm_struct", "env_end", false),
    ("TASK_FILES_OFF", "task_struct", "files", false),
    ("FILES_FDT_OFF", "files_struct", "fdt", false),
    ("FDT_MAX_FDS_OFF", "fdtable", "max_fds", false),
    ("FDT_FD_OFF", "fdtable", "fd", false),
    ("FILE_INODE_OFF", "file", "f_inode", false),
    ("INODE_INO_OFF", "inode", "i_ino", false),
    ("INODE_SB_OFF", "inode", "i_sb", false),
    ("SB_DEV_OFF", "super_block", "s_dev", false),
];

fn read_layout() -> anyhow::Result<Layout> {
    let data = std::fs::read("/sys/kernel/btf/vmlinux").context(
        "reading kernel BTF (/sys/kernel/btf/vmlinux); the kernel needs CONFIG_DEBUG_INFO_BTF",
    )?;
    let btf = btf::Btf::parse(&data).context("parsing kernel BTF")?;
    let mut globals = Vec::new();
    for (global, strukt, member, required) in MEMBERS {
        match btf.member_offset(strukt, member) {
            Ok(off) => globals.push((global, off)),
            Err(e) if required => {
                return Err(e).with_context(|| format!("finding {strukt}.{member} in kernel BTF"));
            }
            Err(e) => tracing::warn!("{strukt}.{member}: {e}; what it gives will be unknown"),
        }
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
    Err(Failure::CannotTrace.mark(anyhow::Error::new(Refused {
        short: "not root",
        message: format!(
            "tracing needs root: loading BPF programs and uprobes requires {} (or \
             CAP_SYS_ADMIN); run it with sudo",
            missing.join(" and ")
        ),
        source: None,
    })))
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
    pub fn load(opts: &Options) -> anyhow::Result<(Self, EventStream)> {
        check_privileges()?;
        raise_memlock_limit();
        let started = std::time::Instant::now();
        let layout = read_layout().fail_as(Failure::CannotTrace)?;
        tracing::debug!("kernel layout read from BTF in {:?}", started.elapsed());

        let follow_all = u32::from(opts.follow_all);
        // Every process's output, system-wide, would be noise: only followed processes'.
        let capture_output = u32::from(!opts.follow_all);
        let (cgroup_id, cgroup_level) = opts.follow_cgroup.unwrap_or((0, 0));
        let self_tgid = std::process::id();
        // A quarter full: the reader, draining on its timer, is falling behind.
        let wake_at = u64::from(opts.ring_bytes / 4);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .override_global(names::WAKE_AT, &wake_at, true)
            .override_global(names::FOLLOW_ALL, &follow_all, true)
            .override_global(names::CAPTURE_OUTPUT, &capture_output, true)
            .override_global(names::FOLLOW_CGROUP_ID, &cgroup_id, true)
            .override_global(names::FOLLOW_CGROUP_LEVEL, &cgroup_level, true)
            .override_global(names::SELF_TGID, &self_tgid, true);
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
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        // The logger is created before anything runs, so the event loop owns it.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!("eBPF logger unavailable: {e}");
                None
            }
        };

        for name in [
            "sched_process_exec",
            "sched_process_exit",
            "sched_process_fork",
            "sys_enter",
            "sys_exit",
        ] {
            let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|e| refused(e.into()))
                .with_context(|| format!("loading {name}"))?;
            let id = prog
                .attach(name)
                .with_context(|| format!("attaching to raw tracepoint {name}"))
                .fail_as(Failure::CannotTrace)?;
            links.push(Box::new(prog.take_link(id)?));
        }
        for name in ["dl_enter", "dl_return", "api_enter", "api_return"] {
            let prog: &mut UProbe = program(&mut ebpf, name)?;
            prog.load()
                .map_err(|e| refused(e.into()))
                .with_context(|| format!("loading {name}"))?;
        }

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
        };
        let stream = EventStream {
            events: RingBuf::try_from(take(&mut ebpf, names::EVENTS)?)?,
            errors: PerCpuArray::try_from(take(&mut ebpf, names::ERRORS)?)?,
            logger,
            undecodable: 0,
        };
        let mut backend = Self {
            ebpf,
            links,
            probed: Vec::new(),
            probed_ids: Vec::new(),
            api_probed: Vec::new(),
            guard: None,
        };
        if opts.stop_to_arm {
            backend.start_holding()?;
        }
        Ok((backend, stream))
    }

    /// Starts the hold guard, then lets the kernel hold processes: never one without the other.
    fn start_holding(&mut self) -> anyhow::Result<()> {
        let guard = Guard::spawn(
            map_data(&self.ebpf, names::HOLDS)?.fd().as_fd(),
            map_data(&self.ebpf, names::HOLD_GATE)?.fd().as_fd(),
        )?;
        self.guard = Some(guard);
        self.set_hold_gate(true)
    }

    /// Opens or closes the kernel's gate to new holds.
    fn set_hold_gate(&mut self, open: bool) -> anyhow::Result<()> {
        let mut gate: Array<_, u32> = Array::try_from(
            self.ebpf
                .map_mut(names::HOLD_GATE)
                .ok_or_else(|| anyhow!("map {} missing", names::HOLD_GATE))?,
        )?;
        gate.set(0, &u32::from(open), 0)
            .context("setting the hold gate")
    }

    /// Forgets a hold the tracer ended (the kernel wrote it down at `held_at`); false when it
    /// was no longer written down, because the guard had ended it.
    fn forget_hold(&mut self, held_at: u64) -> bool {
        self.ebpf
            .map_mut(names::HOLDS)
            .and_then(|map| HashMap::<_, u64, u32>::try_from(map).ok())
            .is_some_and(|mut holds| holds.remove(&held_at).is_ok())
    }

    /// Puts `program` on `points` (file offset, cookie) of `file`, as one uprobe_multi link.
    fn attach_multi(
        &mut self,
        program_name: &str,
        file: &Path,
        points: &[(u64, u64)],
    ) -> anyhow::Result<()> {
        let prog: &mut UProbe = program(&mut self.ebpf, program_name)?;
        let points = points.iter().map(|&(offset, cookie)| UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(cookie),
        });
        let id = prog
            .attach(points, file, UProbeScope::AllProcesses)
            .with_context(|| format!("attaching {program_name} to {}", file.display()))?;
        self.links.push(Box::new(prog.take_link(id)?));
        Ok(())
    }

    /// Detaches every probe now, then unloads everything. An uprobe_multi link's release waits
    /// for an RCU grace period of its own; released side by side, the links share them.
    pub fn release(mut self) {
        let started = std::time::Instant::now();
        let links = std::mem::take(&mut self.links);
        let count = links.len();
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        let links_done = started.elapsed();
        // No program runs now: the guard continues whatever is still held, and exits.
        if let Some(guard) = self.guard.take() {
            guard.finish();
        }
        drop(self);
        tracing::debug!(
            "released {count} links in {links_done:?}, everything in {:?}",
            started.elapsed()
        );
    }

    /// Puts the `dl*` uprobes on each library not probed yet: one link for the entries and one
    /// for the returns (and `dlerror`) of each file. Returns how many were new.
    pub fn probe_libraries(&mut self, libs: &[PathBuf]) -> anyhow::Result<usize> {
        let mut added = 0;
        for lib in libs {
            added += usize::from(self.probe_dl(lib, lib)?);
        }
        if self.probed.is_empty() {
            bail!("found no C library exporting dlopen to probe");
        }
        Ok(added)
    }

    /// Puts the `dl*` uprobes on the C library at `lib` (`shown` is its path for people), and
    /// tells the kernel it is armed, so that mapping it holds nobody. Whether it was new.
    pub(super) fn probe_dl(&mut self, lib: &Path, shown: &Path) -> anyhow::Result<bool> {
        let file = match files::read_elf(lib, true, true) {
            Ok(file) => file,
            Err(e) => {
                tracing::debug!("{}: {e:#}; not probed", shown.display());
                return Ok(false);
            }
        };
        if self.probed_ids.contains(&file.id) {
            return Ok(false);
        }
        let enter = file
            .facts
            .probe_points(DlFunc::CALLS.map(|f| (f.symbol(), f as u64)));
        if enter.is_empty() {
            tracing::debug!("{} exports no dl* function; not probed", shown.display());
            return Ok(false);
        }
        let mut ret = enter.clone();
        ret.extend(
            file.facts
                .probe_points([("dlerror", u64::from(DLERROR_COOKIE))]),
        );
        self.attach_multi("dl_enter", lib, &enter)?;
        self.attach_multi("dl_return", lib, &ret)?;
        tracing::debug!("probing dl* in {}", shown.display());
        self.probed.push(shown.to_path_buf());
        self.probed_ids.push(file.id);
        self.mark_armed(api::armed_key(file.id))?;
        Ok(true)
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
        map.insert(&tgid, &1, 0)
            .with_context(|| format!("following process {tgid}"))
    }
}

impl super::Source for EventStream {
    fn drain(&mut self, out: &mut Vec<RawEvent>, max: usize) -> usize {
        EventStream::drain(self, out, max)
    }

    fn fd(&self) -> RawFd {
        self.events_fd()
    }

    fn lost(&self) -> u64 {
        self.errors().map_or(0, |e| e.lost)
    }

    fn log_fd(&self) -> Option<RawFd> {
        self.logger_fd()
    }

    fn flush_logs(&mut self) {
        EventStream::flush_logs(self);
    }
}

impl EventStream {
    pub fn errors(&self) -> anyhow::Result<KernelErrors> {
        let sum = |i: u32| -> anyhow::Result<u64> { Ok(self.errors.get(&i, 0)?.iter().sum()) };
        Ok(KernelErrors {
            lost: sum(error_index::RINGBUF_FULL)?,
            no_scratch: sum(error_index::NO_SCRATCH)?,
            follow_map_full: sum(error_index::FOLLOW_MAP_FULL)?,
            arm_ring_full: sum(error_index::ARM_RING_FULL)?,
            output_over_budget: sum(error_index::OUTPUT_OVER_BUDGET)?,
        })
    }

    /// Decodes up to `max` records waiting in the ring buffer into `out`; returns how many
    /// were taken (fewer than `max`: the ring is empty).
    pub fn drain(&mut self, out: &mut Vec<RawEvent>, max: usize) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(item) = self.events.next() else {
                break;
            };
            taken += 1;
            match decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    self.undecodable += 1;
                    tracing::warn!("dropping an undecodable record: {e}");
                }
            }
        }
        taken
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

fn map_data<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a MapData> {
    match ebpf.map(name) {
        Some(Map::HashMap(data) | Map::Array(data)) => Ok(data),
        _ => Err(anyhow!("map {name} missing from the eBPF object")),
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

/// Whether this process runs in a user namespace other than the initial one (whose uid map is
/// the identity over all 2^32 - 1 ids).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields != ["0", "0", "4294967295"]
    })
}

/// Why the kernel refused the programs: a few words for the line that says a session falls
/// back to ptrace, and the whole reason for an error.
#[derive(Debug)]
pub struct Refused {
    pub short: &'static str,
    message: String,
    source: Option<anyhow::Error>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref())
    }
}

impl Refused {
    /// The refusal in `err`'s chain, if it is one.
    pub fn of(err: &anyhow::Error) -> Option<&Self> {
        crate::failure::find::<Self>(err)
    }
}

/// Marks a failure to load programs as "cannot trace" (exit 3), and a permission error
/// anywhere in its chain with a message that names the privilege.
fn refused(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|c| c == libc::EPERM || c == libc::EACCES)
    }) || format!("{err:#}").contains("Operation not permitted");
    let no_bpf = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|c| c == libc::ENOSYS)
    });
    let refusal = if denied && in_user_namespace() {
        // Root in a user namespace has every capability there, and BPF still needs them in
        // the initial one: say so rather than "run as root".
        Some((
            "EPERM in a user namespace",
            " (unshare -U, a rootless container); BPF needs CAP_BPF and CAP_PERFMON in the \
             host's initial namespace",
        ))
    } else if denied {
        Some((
            "EPERM",
            ": loading programs needs CAP_BPF and CAP_PERFMON (run as root), and \
             kernel.unprivileged_bpf_disabled or a security module may forbid it",
        ))
    } else if no_bpf {
        Some((
            "no bpf() system call",
            " (ENOSYS: a sandbox such as gVisor, or a kernel built without CONFIG_BPF_SYSCALL)",
        ))
    } else {
        None
    };
    let err = match refusal {
        Some((short, why)) => anyhow::Error::new(Refused {
            short,
            message: format!("the kernel refused BPF: {short}{why}"),
            source: Some(err),
        }),
        None => err,
    };
    // Denied, no BPF in this kernel, or the verifier said no: nothing can be traced here.
    Failure::CannotTrace.mark(err)
}
