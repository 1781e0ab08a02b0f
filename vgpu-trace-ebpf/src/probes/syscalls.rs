//! Syscalls, through the raw `sys_enter` and `sys_exit` tracepoints: the eight this tracer wants
//! (open, openat, openat2, mmap, close, execve, execveat, and write for the output) go on to a
//! program of their own, every other returns after one comparison. (glibc's loader opens with
//! openat, musl's with open.) Raw tracepoints detach at
//! once, where each per-syscall trace event waits for RCU grace periods under a global mutex
//! (about 70 ms each here), and a session must end without making anyone wait.
//!
//! The dispatchers tail-call one program per syscall (`syscall_slot`): the verifier checks
//! each on its own, so no syscall's handling multiplies another's states, and every program
//! stays far inside its budget on every kernel.
use aya_ebpf::{
    bindings::pt_regs,
    helpers::bpf_get_current_pid_tgid,
    helpers::bpf_probe_read_kernel,
    macros::{map, raw_tracepoint},
    maps::ProgramArray,
    programs::RawTracePointContext,
};
use vgpu_trace_common::syscall_slot;

use super::{exec, files, output};
use crate::maps::{is_followed, joins_by_cgroup};

/// The programs `sys_enter` and `sys_exit` pass a wanted syscall on to, by `syscall_slot`;
/// userspace fills them before attaching the dispatchers.
#[map]
static SYS_ENTER_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(syscall_slot::COUNT, 0);
#[map]
static SYS_EXIT_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(syscall_slot::COUNT, 0);

#[cfg(not(bpf_target_arch = "x86_64"))]
compile_error!("syscall numbers and registers are spelled out for x86_64 only");

/// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
mod nr {
    pub const WRITE: i64 = 1;
    pub const OPEN: i64 = 2;
    pub const CLOSE: i64 = 3;
    pub const MMAP: i64 = 9;
    pub const EXECVE: i64 = 59;
    pub const OPENAT: i64 = 257;
    pub const EXECVEAT: i64 = 322;
    pub const OPENAT2: i64 = 437;
}

/// The program a syscall goes on to, if it is one of the eight.
#[inline(always)]
fn slot(id: i64) -> Option<u32> {
    Some(match id {
        nr::OPEN | nr::OPENAT | nr::OPENAT2 => syscall_slot::OPEN,
        nr::MMAP => syscall_slot::MMAP,
        nr::CLOSE => syscall_slot::CLOSE,
        nr::WRITE => syscall_slot::WRITE,
        nr::EXECVE | nr::EXECVEAT => syscall_slot::EXEC,
        _ => return None,
    })
}

/// The argument registers a syscall was entered with: `pt_regs` from r10 to rdi, copied (a
/// raw tracepoint may not read them in place, and the whole struct would crowd the stack).
#[repr(C)]
#[derive(Clone, Copy)]
struct Args {
    r10: u64,
    r9: u64,
    r8: u64,
    _rax: u64,
    _rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
}

impl Args {
    #[inline(always)]
    fn read(regs: *const pt_regs) -> Option<Self> {
        unsafe { bpf_probe_read_kernel((&raw const (*regs).r10).cast::<Args>()) }.ok()
    }

    /// Syscall argument `n` (x86_64: rdi, rsi, rdx, r10, r8, r9).
    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        match n {
            0 => self.rdi,
            1 => self.rsi,
            2 => self.rdx,
            3 => self.r10,
            4 => self.r8,
            _ => self.r9,
        }
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) {
    let id: i64 = ctx.arg(1);
    let Some(slot) = slot(id) else {
        return;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // A process of the followed cgroup (a restarted service) is followed from its exec on.
    if !is_followed(tgid) && !(slot == syscall_slot::EXEC && joins_by_cgroup(tgid)) {
        return;
    }
    // Returns only if the slot is empty, which userspace never leaves it.
    unsafe { SYS_ENTER_PROGRAMS.tail_call(&ctx, slot) };
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) {
    let Some(id) = syscall_id(&ctx) else {
        return;
    };
    let slot = match slot(id) {
        Some(syscall_slot::CLOSE | syscall_slot::WRITE) | None => return,
        Some(slot) => slot,
    };
    unsafe { SYS_EXIT_PROGRAMS.tail_call(&ctx, slot) };
}

/// The syscall a `sys_exit` is for (the tracepoint passes only its result).
#[inline(always)]
fn syscall_id(ctx: &RawTracePointContext) -> Option<i64> {
    let regs: *const pt_regs = ctx.arg(0);
    unsafe { bpf_probe_read_kernel(&raw const (*regs).orig_rax) }
        .ok()
        .map(|id| id as i64)
}

/// The arguments of the syscall being entered.
#[inline(always)]
fn args(ctx: &RawTracePointContext) -> Option<(u64, i64, Args)> {
    Some((
        bpf_get_current_pid_tgid(),
        ctx.arg(1),
        Args::read(ctx.arg(0))?,
    ))
}

// One program per syscall: loaded, not attached; reached by tail call alone.

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_open(ctx: RawTracePointContext) {
    let Some((pid_tgid, id, args)) = args(&ctx) else {
        return;
    };
    // openat2 passes its flags in a struct; ld.so does not use it, so they are not read.
    let (path, flags) = match id {
        nr::OPEN => (args.arg(0), args.arg(1)),
        nr::OPENAT => (args.arg(1), args.arg(2)),
        _ => (args.arg(1), 0),
    };
    files::open_enter(pid_tgid, path, flags);
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_mmap(ctx: RawTracePointContext) {
    if let Some((pid_tgid, _, args)) = args(&ctx) {
        files::mmap_enter(pid_tgid, args.arg(4), args.arg(2), args.arg(1));
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_close(ctx: RawTracePointContext) {
    if let Some((pid_tgid, _, args)) = args(&ctx) {
        files::close(pid_tgid, args.arg(0));
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_write(ctx: RawTracePointContext) {
    if let Some((pid_tgid, _, args)) = args(&ctx) {
        output::write_enter(pid_tgid, args.arg(0), args.arg(1), args.arg(2));
    }
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_exec(ctx: RawTracePointContext) {
    match args(&ctx) {
        Some((pid_tgid, nr::EXECVE, args)) => exec::enter(pid_tgid, args.arg(0), args.arg(1)),
        Some((pid_tgid, _, args)) => exec::enter(pid_tgid, args.arg(1), args.arg(2)),
        None => {}
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_open(ctx: RawTracePointContext) {
    files::open_exit(bpf_get_current_pid_tgid(), ctx.arg(1));
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_mmap(ctx: RawTracePointContext) {
    files::mmap_exit(bpf_get_current_pid_tgid(), ctx.arg(1));
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_exec(ctx: RawTracePointContext) {
    exec::exit(bpf_get_current_pid_tgid(), ctx.arg(1));
}
