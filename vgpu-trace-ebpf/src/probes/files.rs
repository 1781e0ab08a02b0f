//! What ld.so does that no dlopen uprobe sees: the library paths it tries (openat, with the
//! result), the files it maps executable (mmap PROT_EXEC of such an fd), and their closing.
//! Filtered in the kernel to followed processes and paths containing ".so", so an unrelated
//! process's opens cost one map lookup and nothing enters the ring buffer.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use vgpu_trace_common::{EventKind, LibClosePayload, LibMmapPayload, LibOpenPayload};

use crate::{
    emit::{Record, Space},
    maps::is_followed,
};

// syscalls/sys_enter_openat/format:  dfd@16 filename@24 flags@32 mode@40
// syscalls/sys_enter_openat2/format: dfd@16 filename@24 how@32 usize@40
// syscalls/sys_enter_mmap/format:    addr@16 len@24 prot@32 flags@40 fd@48 off@56
// syscalls/sys_enter_close/format:   fd@16
// syscalls/sys_exit_*/format:        ret@16
#[unsafe(no_mangle)]
static OPENAT_FILENAME_OFF: Global<u32> = Global::new(24);
#[unsafe(no_mangle)]
static OPENAT_FLAGS_OFF: Global<u32> = Global::new(32);
#[unsafe(no_mangle)]
static MMAP_LEN_OFF: Global<u32> = Global::new(24);
#[unsafe(no_mangle)]
static MMAP_PROT_OFF: Global<u32> = Global::new(32);
#[unsafe(no_mangle)]
static MMAP_FD_OFF: Global<u32> = Global::new(48);
#[unsafe(no_mangle)]
static CLOSE_FD_OFF: Global<u32> = Global::new(16);
#[unsafe(no_mangle)]
static SYS_RET_OFF: Global<u32> = Global::new(16);

const PROT_EXEC: u64 = 4;
/// Bytes of a path looked at for ".so".
const SCAN: usize = 256;

/// An openat of a library-looking path in flight: (filename pointer, flags) by thread.
#[map]
static OPEN_PENDING: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(4096, 0);
/// fds (tgid << 32 | fd) opened on library-looking paths and not yet closed.
#[map]
static LIB_FDS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);
/// An executable mmap of such an fd in flight: (fd, prot, len) by thread.
#[map]
static MMAP_PENDING: LruHashMap<u64, [u64; 3]> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn arg(ctx: &TracePointContext, off: &Global<u32>) -> u64 {
    unsafe { ctx.read_at::<u64>(off.load() as usize) }.unwrap_or(0)
}

/// Whether the path contains ".so": libraries, their versioned names, ld.so.cache and
/// ld.so.preload.
#[inline(always)]
fn library_like(path: u64) -> bool {
    let mut buf = [0u8; SCAN];
    let Ok(bytes) = (unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut buf) }) else {
        return false;
    };
    let len = bytes.len().min(SCAN);
    let mut i = 0;
    while i + 2 < len && i + 2 < SCAN {
        if buf[i] == b'.' && buf[i + 1] == b's' && buf[i + 2] == b'o' {
            return true;
        }
        i += 1;
    }
    false
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) {
    on_open_enter(&ctx, arg(&ctx, &OPENAT_FLAGS_OFF));
}

/// openat2 passes its flags in a struct; ld.so does not use it, so they are not read.
#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) {
    on_open_enter(&ctx, 0);
}

#[inline(always)]
fn on_open_enter(ctx: &TracePointContext, flags: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_followed((pid_tgid >> 32) as u32) {
        return;
    }
    let path = arg(ctx, &OPENAT_FILENAME_OFF);
    if path != 0 && library_like(path) {
        let _ = OPEN_PENDING.insert(&pid_tgid, &[path, flags], 0);
    }
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) {
    on_open_exit(&ctx);
}

#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) {
    on_open_exit(&ctx);
}

#[inline(always)]
fn on_open_exit(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(&[path, flags]) = (unsafe { OPEN_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = OPEN_PENDING.remove(&pid_tgid);
    let ret = arg(ctx, &SYS_RET_OFF) as i64;
    if ret >= 0 {
        let _ = LIB_FDS.insert(&((pid_tgid & !0xffff_ffff) | ret as u64), &1, 0);
    }
    let Some(mut rec) = Record::<LibOpenPayload>::new() else {
        return;
    };
    *rec.payload() = LibOpenPayload {
        ret,
        flags: flags as u32,
        _pad: 0,
    };
    rec.push_str(Space::User, path as *const u8, false);
    rec.send(EventKind::LibOpen);
}

#[inline(always)]
fn tracked_fd(pid_tgid: u64, fd: u64) -> u64 {
    (pid_tgid & !0xffff_ffff) | (fd & 0xffff_ffff)
}

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) {
    let prot = arg(&ctx, &MMAP_PROT_OFF);
    if prot & PROT_EXEC == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = arg(&ctx, &MMAP_FD_OFF);
    if unsafe { LIB_FDS.get(&tracked_fd(pid_tgid, fd)) }.is_none() {
        return;
    }
    let args = [fd, prot, arg(&ctx, &MMAP_LEN_OFF)];
    let _ = MMAP_PENDING.insert(&pid_tgid, &args, 0);
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(&[fd, prot, len]) = (unsafe { MMAP_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = MMAP_PENDING.remove(&pid_tgid);
    let Some(mut rec) = Record::<LibMmapPayload>::new() else {
        return;
    };
    *rec.payload() = LibMmapPayload {
        addr: arg(&ctx, &SYS_RET_OFF) as i64,
        len,
        fd: fd as u32,
        prot: prot as u32,
    };
    rec.send(EventKind::LibMmap);
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let fd = arg(&ctx, &CLOSE_FD_OFF);
    let key = tracked_fd(pid_tgid, fd);
    if unsafe { LIB_FDS.get(&key) }.is_none() {
        return;
    }
    let _ = LIB_FDS.remove(&key);
    let Some(mut rec) = Record::<LibClosePayload>::new() else {
        return;
    };
    *rec.payload() = LibClosePayload {
        fd: fd as u32,
        _pad: 0,
    };
    rec.send(EventKind::LibClose);
}
