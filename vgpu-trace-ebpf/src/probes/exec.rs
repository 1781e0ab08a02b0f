//! execve/execveat entry: argv and the allowlisted environment, captured in the kernel
//! because discovery children live about a second and their /proc is gone by the time
//! userspace could look.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
};
use vgpu_trace_common::{
    ARGV_MAX, ArgvPayload, ENV_SCAN_MAX, EnvPayload, EventKind, ExecFailPayload,
};

use crate::{
    emit::{Record, Space},
    maps::is_followed,
};

// syscalls/sys_enter_execve/format:   filename@16 argv@24 envp@32
// syscalls/sys_enter_execveat/format: fd@16 filename@24 argv@32 envp@40
// syscalls/sys_exit_execve{,at}/format: ret@16
#[unsafe(no_mangle)]
static EXECVE_FILENAME_OFF: Global<u32> = Global::new(16);
#[unsafe(no_mangle)]
static EXECVE_ARGV_OFF: Global<u32> = Global::new(24);
#[unsafe(no_mangle)]
static EXECVE_ENVP_OFF: Global<u32> = Global::new(32);
#[unsafe(no_mangle)]
static EXECVEAT_FILENAME_OFF: Global<u32> = Global::new(24);
#[unsafe(no_mangle)]
static EXECVEAT_ARGV_OFF: Global<u32> = Global::new(32);
#[unsafe(no_mangle)]
static EXECVEAT_ENVP_OFF: Global<u32> = Global::new(40);
#[unsafe(no_mangle)]
static EXEC_RET_OFF: Global<u32> = Global::new(16);

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) {
    on_enter(
        &ctx,
        EXECVE_FILENAME_OFF.load(),
        EXECVE_ARGV_OFF.load(),
        EXECVE_ENVP_OFF.load(),
    );
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) {
    on_enter(
        &ctx,
        EXECVEAT_FILENAME_OFF.load(),
        EXECVEAT_ARGV_OFF.load(),
        EXECVEAT_ENVP_OFF.load(),
    );
}

/// Only failures are sent: a successful exec is reported by `sched_process_exec`.
#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) {
    on_exit(&ctx);
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) {
    on_exit(&ctx);
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let ret = unsafe { ctx.read_at::<i64>(EXEC_RET_OFF.load() as usize) }.unwrap_or(0);
    if ret >= 0 || !is_followed((bpf_get_current_pid_tgid() >> 32) as u32) {
        return;
    }
    if let Some(mut rec) = Record::<ExecFailPayload>::new() {
        *rec.payload() = ExecFailPayload { ret };
        rec.send(EventKind::ExecFail);
    }
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, filename_off: u32, argv_off: u32, envp_off: u32) {
    if !is_followed((bpf_get_current_pid_tgid() >> 32) as u32) {
        return;
    }
    let read_ptr = |off: u32| unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0);
    send_argv(read_ptr(filename_off), read_ptr(argv_off));
    send_env(read_ptr(envp_off));
}

#[inline(always)]
fn user_ptr_at(array: u64, index: usize) -> u64 {
    if array == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_user((array as *const u64).add(index)) }.unwrap_or(0)
}

/// Blob: filename NUL argv[0] NUL argv[1] NUL ...
fn send_argv(filename: u64, argv: u64) {
    let Some(mut rec) = Record::<ArgvPayload>::new() else {
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
    *rec.payload() = ArgvPayload {
        argc,
        more: more as u32,
    };
    rec.send(EventKind::ExecArgv);
}

/// Blob: the allowlisted `K=V` entries, NUL-separated.
fn send_env(envp: u64) {
    let Some(mut rec) = Record::<EnvPayload>::new() else {
        return;
    };
    let mut count = 0u32;
    let mut scanned = 0u32;
    for i in 0..ENV_SCAN_MAX {
        let entry = user_ptr_at(envp, i);
        if entry == 0 {
            break;
        }
        scanned += 1;
        if !allowlisted(entry) {
            continue;
        }
        if !rec.push_str(Space::User, entry as *const u8, true) {
            break;
        }
        count += 1;
    }
    *rec.payload() = EnvPayload { count, scanned };
    rec.send(EventKind::ExecEnv);
}

const fn word(s: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let mut i = 0;
    while i < s.len() && i < 8 {
        bytes[i] = s[i];
        i += 1;
    }
    u64::from_le_bytes(bytes)
}

const fn mask(n: u32) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// Is the entry one of `LD_LIBRARY_PATH=`, `LD_PRELOAD=`, `CUDA_VISIBLE_DEVICES=`,
/// `NVIDIA_*`, `OLLAMA_*`, `GGML_*`, `VGPU_*`? Compares the first 24 bytes as three words.
#[inline(always)]
fn allowlisted(entry: u64) -> bool {
    let mut w = [0u64; 3];
    let ret = unsafe { bpf_probe_read_user_str(w.as_mut_ptr().cast(), 24, entry as *const _) };
    if ret <= 0 {
        return false;
    }
    let [w0, w1, w2] = w;
    (w0 == word(b"LD_LIBRA") && w1 == word(b"RY_PATH="))
        || (w0 == word(b"LD_PRELO") && w1 & mask(3) == word(b"AD="))
        || (w0 == word(b"CUDA_VIS") && w1 == word(b"IBLE_DEV") && w2 & mask(5) == word(b"ICES="))
        || w0 & mask(7) == word(b"NVIDIA_")
        || w0 & mask(7) == word(b"OLLAMA_")
        || w0 & mask(5) == word(b"GGML_")
        || w0 & mask(5) == word(b"VGPU_")
}
