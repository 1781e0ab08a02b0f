//! Maps and globals shared by every program.
use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use vgpu_trace_common::{FOLLOW_COMMS_MAX, SCRATCH_SIZE, error_index};

/// The one event stream. Userspace sets the real size at load time (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// `ArmRequest`s: few and urgent (a process waits on each), so apart from `EVENTS`.
#[map]
pub static ARM_REQUESTS: RingBuf = RingBuf::with_byte_size(64 << 10, 0);

/// Processes (by tgid) whose events are wanted; extended by the fork tracepoint so that
/// descendants are followed from their first instruction.
#[map]
pub static FOLLOWED: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Failure counters by `error_index`; lost records live here, so loss is never silent.
#[map]
pub static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(error_index::COUNT, 0);

/// Where a record is assembled before `bpf_ringbuf_output` copies its used part.
/// Too large for the 512-byte stack; per-CPU because programs do not migrate while running.
/// Several slots a CPU, each marked busy while a record is made in it: a kernel that preempts
/// BPF programs (7.x with lazy preemption) can run another program on the CPU while one is
/// half-way through its record, and one slot would then be written by both.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);
pub const SCRATCH_SLOTS: u32 = 4;

#[repr(C)]
pub struct Scratch {
    /// 1 while a record is being made here.
    pub busy: u64,
    pub bytes: [u8; SCRATCH_SIZE],
}

/// 1: trace every process on the system (except the tracer itself).
#[unsafe(no_mangle)]
pub static FOLLOW_ALL: Global<u32> = Global::new(0);

/// Bytes waiting in `EVENTS` from which a record wakes the reader; below, it drains on its timer.
#[unsafe(no_mangle)]
pub static WAKE_AT: Global<u64> = Global::new(0);

/// 1: keep what followed processes write to stdout and stderr (not system-wide).
#[unsafe(no_mangle)]
pub static CAPTURE_OUTPUT: Global<u32> = Global::new(0);

/// The tracer's own tgid, never traced in system-wide mode.
#[unsafe(no_mangle)]
pub static SELF_TGID: Global<u32> = Global::new(0);

#[inline(always)]
pub fn count_error(index: u32) {
    if let Some(counter) = ERRORS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer while this program runs.
        unsafe { *counter += 1 };
    }
}

/// A cgroup (v2 id) whose processes are followed from their next exec: the service of
/// `attach --unit`/`--cgroup`, restarted or not. `FOLLOW_CGROUP_LEVEL` is its depth below the
/// root (0: no cgroup is followed); a process in it or below it has it as its ancestor there.
#[unsafe(no_mangle)]
pub static FOLLOW_CGROUP_ID: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static FOLLOW_CGROUP_LEVEL: Global<u32> = Global::new(0);

/// Whether the current process runs in the followed cgroup; if so it is followed from now on.
#[inline(always)]
pub fn joins_by_cgroup(tgid: u32) -> bool {
    let level = FOLLOW_CGROUP_LEVEL.load();
    if level == 0 {
        return false;
    }
    let id =
        unsafe { aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id(level as i32) };
    id != 0 && id == FOLLOW_CGROUP_ID.load() && follow(tgid)
}

/// Process names followed from their exec, each a comm (zero-padded to 16 bytes, as the
/// kernel keeps it) in two words; a pair of zeros is no name.
#[unsafe(no_mangle)]
pub static FOLLOW_COMMS: Global<[u64; 2 * FOLLOW_COMMS_MAX]> =
    Global::new([0; 2 * FOLLOW_COMMS_MAX]);

/// Whether the current process, just exec'd, has a followed name; if so it is followed from
/// now on. The name is the new program's (the kernel set it before `sched_process_exec`).
#[inline(always)]
pub fn joins_by_comm(tgid: u32) -> bool {
    let names = FOLLOW_COMMS.load();
    if names[0] == 0 {
        return false;
    }
    let Ok(comm) = aya_ebpf::helpers::bpf_get_current_comm() else {
        return false;
    };
    // bpf_get_current_comm pads with zeros after the name, as the names were padded.
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&comm[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(w)
    };
    let (lo, hi) = (word(0), word(1));
    for i in 0..FOLLOW_COMMS_MAX {
        if names[2 * i] != 0 && names[2 * i] == lo && names[2 * i + 1] == hi {
            return follow(tgid);
        }
    }
    false
}

/// Follows `tgid` from now on; false (and counted) when the map is full.
#[inline(always)]
pub fn follow(tgid: u32) -> bool {
    let followed = FOLLOWED.insert(&tgid, &1, 0).is_ok();
    if !followed {
        count_error(error_index::FOLLOW_MAP_FULL);
    }
    followed
}

#[inline(always)]
pub fn is_followed(tgid: u32) -> bool {
    if FOLLOW_ALL.load() != 0 {
        return tgid != SELF_TGID.load();
    }
    unsafe { FOLLOWED.get(&tgid) }.is_some()
}
