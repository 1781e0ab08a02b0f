//! Process lifecycle: exec, fork (extends the followed set), exit.
//!
//! Field offsets come from tracefs `format` files and kernel BTF, read by userspace at
//! start-up and patched into these globals; the defaults are the 6.18 layout.
use aya_ebpf::{
    EbpfContext, Global,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::bpf_get_current_task,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use vgpu_trace_common::{EventKind, ExecPayload, ExitPayload, ForkPayload, error_index, offsets};

use crate::{
    emit::{Record, Space},
    maps::{FOLLOW_ALL, FOLLOWED, count_error, is_followed},
};

// sched/sched_process_exec/format (6.18):
//   field:__data_loc char[] filename;  offset:8;  size:4;
//   field:pid_t pid;                   offset:12; size:4;
//   field:pid_t old_pid;               offset:16; size:4;
#[unsafe(no_mangle)]
static EXEC_FILENAME_OFF: Global<u32> = Global::new(8);
#[unsafe(no_mangle)]
static EXEC_OLD_PID_OFF: Global<u32> = Global::new(16);

// sched/sched_process_exit/format (6.18):
//   field:char comm[16]; offset:8;  field:pid_t pid; offset:24;
//   field:int prio;      offset:28; field:bool group_dead; offset:32;  (absent before 6.16)
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD_OFF: Global<u32> = Global::new(offsets::UNKNOWN);

// struct task_struct members, from /sys/kernel/btf/vmlinux.
#[unsafe(no_mangle)]
static TASK_TGID_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFF: Global<u32> = Global::new(offsets::UNKNOWN);

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_followed(tgid) {
        return;
    }
    let Some(mut rec) = Record::<ExecPayload>::new() else {
        return;
    };
    let old_tid = unsafe { ctx.read_at::<u32>(EXEC_OLD_PID_OFF.load() as usize) }.unwrap_or(0);
    *rec.payload() = ExecPayload {
        old_tid,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // __data_loc: low 16 bits are the string's offset in the record, high 16 its length.
    if let Ok(loc) = unsafe { ctx.read_at::<u32>(EXEC_FILENAME_OFF.load() as usize) } {
        let filename = unsafe { ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize) };
        rec.push_str(Space::Kernel, filename, false);
    }
    rec.send(EventKind::Exec);
}

/// Raw tracepoint: its arguments are the parent and child `task_struct`s, so the child's
/// tgid tells a new process from a new thread (threads are already covered by their tgid).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_followed(parent_tgid) {
        return;
    }
    let tgid_off = TASK_TGID_OFF.load();
    if tgid_off == offsets::UNKNOWN {
        return;
    }
    let child = ctx.arg::<u64>(1) as *const u8;
    let Ok(child_tgid) =
        (unsafe { bpf_probe_read_kernel(child.add(tgid_off as usize).cast::<u32>()) })
    else {
        return;
    };
    if child_tgid == parent_tgid {
        return;
    }
    if FOLLOW_ALL.load() == 0 && FOLLOWED.insert(&child_tgid, &1, 0).is_err() {
        count_error(error_index::FOLLOW_MAP_FULL);
        warn!(
            &ctx,
            "followed-process map full: child {} is not followed", child_tgid
        );
    }
    let Some(mut rec) = Record::<ForkPayload>::new() else {
        return;
    };
    *rec.payload() = ForkPayload {
        child_tgid,
        _pad: 0,
    };
    rec.send(EventKind::Fork);
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_followed(tgid) {
        return;
    }
    let group_dead_off = EXIT_GROUP_DEAD_OFF.load();
    let group_dead = if group_dead_off == offsets::UNKNOWN {
        // Older kernels: take the leader's exit as the process's.
        pid_tgid as u32 == tgid
    } else {
        unsafe { ctx.read_at::<u8>(group_dead_off as usize) }.unwrap_or(0) != 0
    };
    let code_off = TASK_EXIT_CODE_OFF.load();
    let code = if code_off == offsets::UNKNOWN {
        None
    } else {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        unsafe { bpf_probe_read_kernel(task.add(code_off as usize).cast::<i32>()) }.ok()
    };
    if let Some(mut rec) = Record::<ExitPayload>::new() {
        *rec.payload() = ExitPayload {
            exit_code: code.unwrap_or(0) as u32,
            group_dead: group_dead as u32,
            code_known: code.is_some() as u32,
            _pad: 0,
        };
        rec.send(EventKind::Exit);
    }
    if group_dead && FOLLOW_ALL.load() == 0 {
        let _ = FOLLOWED.remove(&tgid);
    }
}
