//! Syscalls, through the raw `sys_enter` and `sys_exit` tracepoints: the seven this tracer wants
//! (openat, openat2, mmap, close, execve, execveat, and write for the output) go to their
//! handlers, every other returns
//! after one comparison. Raw tracepoints detach at once, where each per-syscall trace event
//! waits for RCU grace periods under a global mutex (about 70 ms each here), and a session
//! must end without making anyone wait.
use aya_ebpf::{
    bindings::pt_regs, helpers::bpf_get_current_pid_tgid, helpers::bpf_probe_read_kernel,
    macros::raw_tracepoint, programs::RawTracePointContext,
};

use super::{exec, files, output};
use crate::maps::{is_followed, joins_by_cgroup};

#[cfg(not(bpf_target_arch = "x86_64"))]
compile_error!("syscall numbers and registers are spelled out for x86_64 only");

/// x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
mod nr {
    pub const WRITE: i64 = 1;
    pub const CLOSE: i64 = 3;
    pub const MMAP: i64 = 9;
    pub const EXECVE: i64 = 59;
    pub const OPENAT: i64 = 257;
    pub const EXECVEAT: i64 = 322;
    pub const OPENAT2: i64 = 437;
}

#[inline(always)]
fn wanted(id: i64) -> bool {
    matches!(
        id,
        nr::OPENAT | nr::OPENAT2 | nr::MMAP | nr::CLOSE | nr::EXECVE | nr::EXECVEAT | nr::WRITE
    )
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
    if !wanted(id) {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // A process of the followed cgroup (a restarted service) is followed from its exec on.
    if !is_followed(tgid) && !(matches!(id, nr::EXECVE | nr::EXECVEAT) && joins_by_cgroup(tgid)) {
        return;
    }
    let Some(args) = Args::read(ctx.arg(0)) else {
        return;
    };
    match id {
        // One call site: the path scan is the costliest code to verify.
        // openat2 passes its flags in a struct; ld.so does not use it, so they are not read.
        nr::OPENAT | nr::OPENAT2 => {
            let flags = if id == nr::OPENAT { args.arg(2) } else { 0 };
            files::open_enter(pid_tgid, args.arg(1), flags)
        }
        nr::MMAP => files::mmap_enter(pid_tgid, args.arg(4), args.arg(2), args.arg(1)),
        nr::CLOSE => files::close(pid_tgid, args.arg(0)),
        nr::WRITE => output::write_enter(pid_tgid, args.arg(0), args.arg(1), args.arg(2)),
        nr::EXECVE => exec::enter(pid_tgid, args.arg(0), args.arg(1)),
        nr::EXECVEAT => exec::enter(pid_tgid, args.arg(1), args.arg(2)),
        _ => {}
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) {
    let regs: *const pt_regs = ctx.arg(0);
    let Ok(id) = (unsafe { bpf_probe_read_kernel(&raw const (*regs).orig_rax) }) else {
        return;
    };
    let id = id as i64;
    if !wanted(id) || id == nr::CLOSE || id == nr::WRITE {
        return;
    }
    let ret: i64 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    match id {
        nr::OPENAT | nr::OPENAT2 => files::open_exit(pid_tgid, ret),
        nr::MMAP => files::mmap_exit(pid_tgid, ret),
        nr::EXECVE | nr::EXECVEAT => exec::exit(pid_tgid, ret),
        _ => {}
    }
}
