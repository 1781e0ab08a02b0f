//! Process lifecycle: exec, fork (extends the followed set), exit. Raw tracepoints: their
//! arguments are the kernel's own (`task_struct`, `linux_binprm`), and they detach at once.
//!
//! Member offsets come from kernel BTF, read by userspace at start-up and patched into these
//! globals, so no kernel's layout is compiled in.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_task},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use vgpu_trace_common::{EventKind, ExecPayload, ExitPayload, ForkPayload, offsets};

use super::exec;
use crate::{
    emit::{Record, Space},
    kernel::read_at,
    maps::{FOLLOW_ALL, FOLLOWED, follow, is_followed, joins_by_comm},
};

// struct task_struct, signal_struct and linux_binprm members, from /sys/kernel/btf/vmlinux.
#[unsafe(no_mangle)]
static TASK_TGID_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static TASK_SIGNAL_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static SIGNAL_LIVE_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static BINPRM_FILENAME_OFF: Global<u32> = Global::new(offsets::UNKNOWN);

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A process that just became a followed name (`watch ollama`) is followed from here on.
    if !is_followed(tgid) && !joins_by_comm(tgid) {
        return;
    }
    exec::send_areas();
    let Some(mut rec) = Record::<ExecPayload>::new() else {
        return;
    };
    let old_tid: u64 = ctx.arg(1);
    *rec.payload() = ExecPayload {
        old_tid: old_tid as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let bprm: u64 = ctx.arg(2);
    if let Some(filename) = read_at::<u64>(bprm, &BINPRM_FILENAME_OFF) {
        rec.push_str(Space::Kernel, filename as *const u8, false);
    }
    rec.send(EventKind::Exec);
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: the child's
/// tgid tells a new process from a new thread (threads are already covered by their tgid).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_followed(parent_tgid) {
        return;
    }
    let child: u64 = ctx.arg(1);
    let Some(child_tgid) = read_at::<u32>(child, &TASK_TGID_OFF) else {
        return;
    };
    if child_tgid == parent_tgid {
        return;
    }
    if FOLLOW_ALL.load() == 0 && !follow(child_tgid) {
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

/// `sched_process_exit(struct task_struct *p[, bool group_dead])`: fires in the exiting task,
/// after it has left its thread group's live count, so a count of 0 means the process is gone
/// (the same on kernels whose tracepoint does not pass `group_dead`).
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_followed(tgid) {
        return;
    }
    let task = unsafe { bpf_get_current_task() };
    let live = read_at::<u64>(task, &TASK_SIGNAL_OFF)
        .and_then(|signal| read_at::<i32>(signal, &SIGNAL_LIVE_OFF));
    let group_dead = match live {
        Some(live) => live == 0,
        // Without the layout, the leader's exit stands for the process's.
        None => pid_tgid as u32 == tgid,
    };
    // Plain values, not an Option kept across the record's making: LLVM reads an Option's
    // payload even when it is None, an uninitialised stack slot that verifiers before 6.x
    // refuse ("invalid read from stack").
    let (exit_code, code_known) = match read_at::<i32>(task, &TASK_EXIT_CODE_OFF) {
        Some(code) => (code as u32, 1),
        None => (0, 0),
    };
    if let Some(mut rec) = Record::<ExitPayload>::new() {
        *rec.payload() = ExitPayload {
            exit_code,
            group_dead: group_dead as u32,
            code_known,
            _pad: 0,
        };
        rec.send(EventKind::Exit);
    }
    if group_dead && FOLLOW_ALL.load() == 0 {
        let _ = FOLLOWED.remove(&tgid);
    }
}
