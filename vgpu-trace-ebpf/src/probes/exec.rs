//! What a program was started with. A successful exec is read from the new program's own
//! memory, where the kernel has just laid out argv and the environment side by side
//! (`mm->arg_start..arg_end`, `env_start..env_end`): a few straight copies, no loop for the
//! verifier to walk, and the allowlist is applied in userspace. A failed exec leaves no new
//! program, so its filename and argv are read from the caller's memory at `sys_exit`.
use aya_ebpf::{
    Global,
    helpers::{bpf_probe_read_user, generated::bpf_get_current_task},
    macros::map,
    maps::LruHashMap,
};
use vgpu_trace_common::{
    ARGV_MAX, BLOB_ROOM, EXEC_ENV_CHUNKS, EventKind, ExecAreaPayload, ExecFailPayload, exec_area,
    offsets,
};

use crate::emit::{Record, Space};
use crate::kernel::read_at;

// struct task_struct and struct mm_struct members, from kernel BTF.
#[unsafe(no_mangle)]
static TASK_MM_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static MM_ARG_START_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static MM_ARG_END_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static MM_ENV_START_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static MM_ENV_END_OFF: Global<u32> = Global::new(offsets::UNKNOWN);

/// An execve in flight: (filename pointer, argv pointer) by thread, for its exit to read if it
/// failed. LRU: a successful exec's entry (its thread may have become the leader) ages out.
#[map]
static EXEC_PENDING: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
pub fn enter(pid_tgid: u64, filename: u64, argv: u64) {
    let _ = EXEC_PENDING.insert(&pid_tgid, &[filename, argv], 0);
}

/// Only failures are sent: a successful exec is reported by `sched_process_exec`.
#[inline(always)]
pub fn exit(pid_tgid: u64, ret: i64) {
    let Some(&[filename, argv]) = (unsafe { EXEC_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = EXEC_PENDING.remove(&pid_tgid);
    if ret >= 0 {
        return;
    }
    let Some(mut rec) = Record::<ExecFailPayload>::new() else {
        return;
    };
    rec.push_str(Space::User, filename as *const u8, true);
    let mut argc = 0u32;
    let mut complete = true;
    for i in 0..ARGV_MAX {
        let arg = user_ptr_at(argv, i);
        if arg == 0 {
            break;
        }
        if !rec.push_str(Space::User, arg as *const u8, true) {
            complete = false;
            break;
        }
        argc += 1;
    }
    let more = !complete || (argc as usize == ARGV_MAX && user_ptr_at(argv, ARGV_MAX) != 0);
    *rec.payload() = ExecFailPayload {
        ret,
        argc,
        more: more as u32,
    };
    rec.send(EventKind::ExecFail);
}

#[inline(always)]
fn user_ptr_at(array: u64, index: usize) -> u64 {
    if array == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_user((array as *const u64).add(index)) }.unwrap_or(0)
}

/// Sends the current (just exec'd) program's argv and environment areas as `ExecArea`
/// records, before its `Exec` record.
#[inline(always)]
pub fn send_areas() {
    let task = unsafe { bpf_get_current_task() };
    let Some(mm) = read_at::<u64>(task, &TASK_MM_OFF) else {
        return;
    };
    let area = |start, end| Some((read_at::<u64>(mm, start)?, read_at::<u64>(mm, end)?));
    if let Some((start, end)) = area(&MM_ARG_START_OFF, &MM_ARG_END_OFF) {
        send_area(exec_area::ARGV, start, end, 0);
    }
    if let Some((start, end)) = area(&MM_ENV_START_OFF, &MM_ENV_END_OFF) {
        for chunk in 0..EXEC_ENV_CHUNKS {
            if !send_area(exec_area::ENV, start, end, (chunk * BLOB_ROOM) as u64) {
                break;
            }
        }
    }
}

/// Sends up to `BLOB_ROOM` bytes of the area `start..end` from `offset`. Returns whether more
/// of the area follows.
#[inline(always)]
fn send_area(area: u32, start: u64, end: u64, offset: u64) -> bool {
    let total = end.saturating_sub(start);
    if offset >= total {
        return false;
    }
    let Some(mut rec) = Record::<ExecAreaPayload>::new() else {
        return false;
    };
    let more = rec.copy_user(start + offset, total - offset);
    *rec.payload() = ExecAreaPayload {
        area,
        offset: offset as u32,
        total: total as u32,
        _pad: 0,
    };
    rec.send(EventKind::ExecArea);
    more
}
