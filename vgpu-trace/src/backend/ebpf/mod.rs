//! The eBPF backend: loads the programs, patches in this kernel's layouts, attaches the
//! tracepoints and `dl*` uprobes, and decodes the ring buffer into raw events.
mod api;
mod arming;
mod btf;
mod guard;
pub mod kernel;
mod libs;
pub mod load;
mod recount;
mod release;

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        RawTracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use vgpu_trace_common::{DLERROR_COOKIE, DlFunc, error_index, names, programs};

pub use self::arming::{Arming, Holds};
use self::guard::Guard;
pub use self::guard::HOLD_LIMIT_NS;
use self::kernel::{AttachMethod, Family, Support};
pub use self::libs::{dl_libraries, provides_dl};
use self::load::{ProgramLoad, Watchdog, refused};
pub use self::load::{Refused, VERIFIER_BUDGET};
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
    /// Process names (comm) followed from their exec: each new `ollama`.
    pub follow_comms: Vec<String>,
    /// Past this, a verifier still at work on a program is stopped and it counts as refused
    /// (`auto`, which can fall back); `None` waits for it (`--backend ebpf`).
    pub verifier_deadline: Option<std::time::Duration>,
    /// Where the kernel does not report the verifier's count (before 5.16), load each program
    /// once more to read it from the log (`doctor`).
    pub recount: bool,
    /// Asked between programs: true stops loading (a signal came while arming).
    pub stopping: fn() -> bool,
}

/// The programs, as built by vgpu-trace/build.rs.
const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vgpu-trace"));

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
    /// The raw tracepoints' links, and the uprobes' (uprobe_multi, or perf-event uprobes), each
    /// taken from its program so that [`Self::release`] can drop them side by side.
    tracepoints: Vec<Box<dyn Send>>,
    links: Vec<Box<dyn Send>>,
    /// Files whose `dl*` functions are probed, and their identities.
    probed: Vec<PathBuf>,
    probed_ids: Vec<FileId>,
    /// Files whose CUDA/NVML discovery functions were looked at.
    api_probed: Vec<FileId>,
    /// Releases what the kernel holds if the tracer cannot; none when nothing is held.
    guard: Option<Guard>,
    /// How uprobes attach on this kernel.
    method: AttachMethod,
    /// What loading each program cost.
    loads: Vec<ProgramLoad>,
    /// Held from loading until arming runs in the background, where perf-event uprobes wait
    /// on other sessions' releases: the session waits for one release at most, not per attach.
    start_lock: Option<release::AttachLock>,
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

/// The running kernel's BTF, or why eBPF cannot trace without it.
fn read_btf() -> anyhow::Result<Vec<u8>> {
    std::fs::read("/sys/kernel/btf/vmlinux").map_err(|e| {
        Refused::new(
            "no kernel BTF (/sys/kernel/btf/vmlinux)",
            format!(
                "reading kernel BTF (/sys/kernel/btf/vmlinux): {e}; eBPF needs a kernel built \
                 with CONFIG_DEBUG_INFO_BTF (5.10 or newer has it in most distributions)"
            ),
        )
        .into_error()
    })
}

fn read_layout(btf: &btf::Btf<'_>) -> anyhow::Result<Layout> {
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

/// What this kernel offers eBPF, and how the programs would attach here (for `doctor`).
pub fn kernel_support() -> Support {
    let data = read_btf().ok();
    let btf = data.as_deref().and_then(|d| btf::Btf::parse(d).ok());
    Support::of(btf.as_ref())
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
    Err(Refused::new(
        "not root",
        format!(
            "tracing needs root: loading BPF programs and uprobes requires {} (or \
             CAP_SYS_ADMIN); run it with sudo",
            missing.join(" and ")
        ),
    )
    .into_error())
}

/// Names as the kernel's `FOLLOW_COMMS` holds them: each cut to the 15 bytes of a comm and
/// zero-padded to 16, in two native-endian words.
fn comm_words(names: &[String]) -> anyhow::Result<[u64; 2 * vgpu_trace_common::FOLLOW_COMMS_MAX]> {
    let mut words = [0u64; 2 * vgpu_trace_common::FOLLOW_COMMS_MAX];
    if names.len() > vgpu_trace_common::FOLLOW_COMMS_MAX {
        anyhow::bail!(
            "at most {} process names can be followed from their start",
            vgpu_trace_common::FOLLOW_COMMS_MAX
        );
    }
    for (i, name) in names.iter().enumerate() {
        let mut comm = [0u8; 16];
        let bytes = name.as_bytes();
        let len = bytes.len().min(15);
        comm[..len].copy_from_slice(&bytes[..len]);
        words[2 * i] = u64::from_ne_bytes(comm[..8].try_into().unwrap_or_default());
        words[2 * i + 1] = u64::from_ne_bytes(comm[8..].try_into().unwrap_or_default());
    }
    Ok(words)
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
        let data = read_btf()?;
        let btf = btf::Btf::parse(&data)
            .context("parsing kernel BTF")
            .fail_as(Failure::CannotTrace)?;
        let method = Support::of(Some(&btf))
            .method()
            .map_err(|why| Refused::new(why.clone(), why).into_error())?;
        let method = AttachMethod::forced().unwrap_or(method);
        let layout = read_layout(&btf).fail_as(Failure::CannotTrace)?;
        drop(btf);
        drop(data);
        tracing::debug!("kernel layout read from BTF in {:?}", started.elapsed());

        let follow_all = u32::from(opts.follow_all);
        // Every process's output, system-wide, would be noise: only followed processes'.
        let capture_output = u32::from(!opts.follow_all);
        let (cgroup_id, cgroup_level) = opts.follow_cgroup.unwrap_or((0, 0));
        let follow_comms = comm_words(&opts.follow_comms)?;
        let self_tgid = std::process::id();
        // A quarter full: the reader, draining on its timer, is falling behind.
        let wake_at = u64::from(opts.ring_bytes / 4);
        let mut loader = EbpfLoader::new();
        loader
            .verifier_log_level(load::log_level())
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .override_global(names::WAKE_AT, &wake_at, true)
            .override_global(names::FOLLOW_ALL, &follow_all, true)
            .override_global(names::CAPTURE_OUTPUT, &capture_output, true)
            .override_global(names::FOLLOW_CGROUP_ID, &cgroup_id, true)
            .override_global(names::FOLLOW_CGROUP_LEVEL, &cgroup_level, true)
            .override_global(names::FOLLOW_COMMS, &follow_comms, true)
            .override_global(names::SELF_TGID, &self_tgid, true);
        for (name, value) in &layout.globals {
            loader.override_global(name, value, true);
        }
        let parsed = std::time::Instant::now();
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| refused(e.into()))
            .context("loading the eBPF programs")?;
        tracing::debug!("object loaded, maps made, in {:?}", parsed.elapsed());

        let mut loads = load_programs(&mut ebpf, method, opts)?;
        if opts.recount && loads.iter().any(|l| l.verified_insns.is_none()) {
            recount(&ebpf, method, &mut loads);
        }
        tracing::debug!("programs loaded at {:?}", started.elapsed());
        // The logger is created before anything runs, so the event loop owns it; and after
        // the recount, which relocates the programs against every map, the logger's included.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!("eBPF logger unavailable: {e}");
                None
            }
        };
        fill_syscall_tables(&mut ebpf).fail_as(Failure::CannotTrace)?;
        let mut tracepoints: Vec<Box<dyn Send>> = Vec::new();
        for name in programs::TRACEPOINTS {
            let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
            let id = prog
                .attach(name)
                .with_context(|| format!("attaching to raw tracepoint {name}"))
                .fail_as(Failure::CannotTrace)?;
            tracepoints.push(Box::new(prog.take_link(id)?));
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
            tracepoints,
            links: Vec::new(),
            probed: Vec::new(),
            probed_ids: Vec::new(),
            api_probed: Vec::new(),
            guard: None,
            method,
            loads,
            start_lock: method.per_probe_links().then(release::AttachLock::take),
        };
        if opts.stop_to_arm {
            backend.start_holding()?;
        }
        Ok((backend, stream))
    }

    /// Runs of each program the kernel skipped (`bpf_prog_info.recursion_misses`, 5.12+): the
    /// program was already running on that CPU, preempted (a kernel with full or lazy
    /// preemption) or interrupted. Their events are missing; only programs that missed some.
    pub fn missed_runs(&self) -> Vec<(String, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let fd = prog.fd().ok()?;
                let missed = load::recursion_misses(fd.as_fd())?;
                (missed > 0).then(|| (name.to_string(), missed))
            })
            .collect()
    }

    /// How uprobes attach on this kernel.
    pub fn attach_method(&self) -> AttachMethod {
        self.method
    }

    /// What loading each program cost, in load order.
    pub fn program_loads(&self) -> &[ProgramLoad] {
        &self.loads
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

    /// Puts the `family` programs on `points` (file offset, function id) of `file`: one link
    /// per program with uprobe_multi, else a perf-event uprobe per point. The function's id
    /// travels as the attach cookie, or picks the program where the kernel has no cookies.
    fn attach_uprobes(
        &mut self,
        family: Family,
        file: &Path,
        points: &[(u64, u64)],
    ) -> anyhow::Result<()> {
        let mut by_program: Vec<(&str, Vec<UProbeAttachPoint<'_>>)> = Vec::new();
        for &(offset, id) in points {
            let (name, cookie) = self
                .method
                .program(family, id as u32)
                .ok_or_else(|| anyhow!("no {family:?} program for function {id}"))?;
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: cookie.then_some(id),
            };
            match by_program.iter_mut().find(|(n, _)| *n == name) {
                Some((_, group)) => group.push(point),
                None => by_program.push((name, vec![point])),
            }
        }
        // A perf-event uprobe attach waits on every release under way: one at most, with this.
        let _lock = (self.method.per_probe_links() && self.start_lock.is_none())
            .then(release::AttachLock::take);
        for (name, group) in by_program {
            let prog: &mut UProbe = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(group, file, UProbeScope::AllProcesses)
                .with_context(|| format!("attaching {name} to {}", file.display()))?;
            self.links.push(Box::new(prog.take_link(id)?));
        }
        Ok(())
    }

    /// Detaches every probe, then unloads everything. An uprobe_multi link's release waits
    /// for an RCU grace period of its own; released side by side, the links share them.
    /// Perf-event uprobes wait for theirs one at a time: a detached process takes them over
    /// and releases them, and this session ends now.
    pub fn release(mut self) {
        let started = std::time::Instant::now();
        // The tracepoints first, at once: after them no hold can be made, and the releaser
        // must not keep them (it takes every probe this process still has).
        drop(std::mem::take(&mut self.tracepoints));
        let links = std::mem::take(&mut self.links);
        let count = links.len();
        let handoff = (self.method.per_probe_links() && count > 0)
            .then(release::hand_off)
            .flatten();
        if let Some(handoff) = &handoff {
            tracing::debug!("{} probes handed to a releaser", handoff.probes);
        }
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
        // Our copies are closed: the releaser's closes are now the ones that release.
        drop(handoff);
        let links_done = started.elapsed();
        // No new hold can be made (the tracepoints are gone; uprobes make none): the guard
        // continues whatever is still held, and exits.
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
        let started = std::time::Instant::now();
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
        let read = started.elapsed();
        self.attach_uprobes(Family::DlEnter, lib, &enter)?;
        self.attach_uprobes(Family::DlReturn, lib, &ret)?;
        tracing::debug!(
            "probing dl* in {} (symbols read in {read:?}, attached in {:?})",
            shown.display(),
            started.elapsed() - read
        );
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

/// Loads the tracepoints and the uprobe programs of `method`, each timed and counted; a
/// verifier still at work on a program after `deadline` is stopped, and the load fails.
fn load_programs(
    ebpf: &mut Ebpf,
    method: AttachMethod,
    opts: &Options,
) -> anyhow::Result<Vec<ProgramLoad>> {
    let watchdog = Watchdog::start(opts.verifier_deadline);
    let mut loads = Vec::new();
    let mut one = |ebpf: &mut Ebpf, name: &str, raw: bool| -> anyhow::Result<()> {
        if (opts.stopping)() {
            return Err(Refused::new("stopped", "stopped by a signal while loading").into_error());
        }
        let started = std::time::Instant::now();
        watchdog.arm();
        let (loaded, info) = if raw {
            let prog: &mut RawTracePoint = program(ebpf, name)?;
            (prog.load(), prog.info())
        } else {
            let prog: &mut UProbe = program(ebpf, name)?;
            (prog.load(), prog.info())
        };
        watchdog.disarm();
        loaded.map_err(|e| load::program_refused(name, e, &watchdog))?;
        // Loaded, but past the deadline all the same: refused, as it would have been a moment
        // later.
        if watchdog.fired() {
            return Err(load::past_deadline(name, &watchdog));
        }
        loads.push(ProgramLoad {
            name: name.to_string(),
            verified_insns: info
                .ok()
                .and_then(|i| i.verified_instruction_count())
                .filter(|n| *n > 0),
            micros: started.elapsed().as_micros() as u64,
        });
        Ok(())
    };
    for name in programs::TRACEPOINTS {
        one(ebpf, name, true)?;
    }
    for (name, _, _) in programs::SYSCALLS {
        one(ebpf, name, true)?;
    }
    for name in method.programs() {
        one(ebpf, name, false)?;
    }
    Ok(loads)
}

/// Fills in the verifier's counts the kernel did not report, from the log of a second load.
fn recount(ebpf: &Ebpf, method: AttachMethod, loads: &mut [ProgramLoad]) {
    let recounter = match recount::Recounter::new(OBJECT, ebpf) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot count the verifier's instructions on this kernel: {e:#}");
            return;
        }
    };
    let uprobe = recount::Kind::Uprobe {
        multi: method == AttachMethod::UprobeMulti,
    };
    for load in loads.iter_mut().filter(|l| l.verified_insns.is_none()) {
        let raw = programs::TRACEPOINTS.contains(&load.name.as_str())
            || programs::SYSCALLS.iter().any(|(n, _, _)| *n == load.name);
        let kind = if raw {
            recount::Kind::RawTracepoint
        } else {
            uprobe
        };
        match recounter.count(&load.name, kind) {
            Ok(n) => load.verified_insns = Some(n),
            Err(e) => tracing::warn!("{}: {e:#}", load.name),
        }
    }
}

/// Puts each syscall's program in its dispatcher's table (before the dispatchers attach: a
/// syscall whose slot is empty would go unseen).
fn fill_syscall_tables(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    for (name, table, slot) in programs::SYSCALLS {
        let prog: &mut RawTracePoint = program(ebpf, name)?;
        let fd = prog.fd()?.try_clone()?;
        let mut map: ProgramArray<_> = ProgramArray::try_from(
            ebpf.map_mut(table)
                .ok_or_else(|| anyhow!("map {table} missing from the eBPF object"))?,
        )?;
        map.set(slot, &fd, 0)
            .with_context(|| format!("putting {name} in {table}"))?;
    }
    Ok(())
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
