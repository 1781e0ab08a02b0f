//! What ld.so does that no dlopen uprobe sees: the library paths it tries (openat, with the
//! result), the files it maps executable (mmap PROT_EXEC of such an fd), and their closing.
//! Filtered in the kernel to followed processes and paths containing ".so", so an unrelated
//! process's opens cost one map lookup and nothing enters the ring buffer.
use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes, generated::bpf_send_signal_thread,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use vgpu_trace_common::{EventKind, LibClosePayload, LibMmapPayload, LibOpenPayload, PATH_SCAN};

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
const SIGSTOP: u32 = 19;

/// 1: stop a process that maps an unarmed CUDA/NVML library (see `LibMmapPayload::stopped`).
#[unsafe(no_mangle)]
static STOP_TO_ARM: Global<u32> = Global::new(0);
/// Path hashes of CUDA/NVML libraries whose API uprobes userspace has armed.
#[map]
static ARMED: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);
/// Bytes of a path looked at for ".so".
const SCAN: usize = PATH_SCAN;

/// An openat of a library-looking path in flight: (filename pointer, flags, path hash if it
/// looks like a CUDA/NVML library else 0) by thread.
#[map]
static OPEN_PENDING: LruHashMap<u64, [u64; 3]> = LruHashMap::with_max_entries(4096, 0);
/// fds (tgid << 32 | fd) opened on library-looking paths and not yet closed: the path's hash
/// when it looks like a CUDA/NVML library, else 1.
#[map]
static LIB_FDS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);
/// An executable mmap of such an fd in flight: (fd, prot, len, LIB_FDS value) by thread.
#[map]
static MMAP_PENDING: LruHashMap<u64, [u64; 4]> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn arg(ctx: &TracePointContext, off: &Global<u32>) -> u64 {
    unsafe { ctx.read_at::<u64>(off.load() as usize) }.unwrap_or(0)
}

/// What a path looks like: a library (".so" in it), a CUDA/NVML one ("libcuda" not followed
/// by "r", "nvidia-ml", "nvml" or "vgpu"), and its hash for `ARMED` (FNV-1a, as `path_hash`).
struct PathKind {
    library: bool,
    api: bool,
    hash: u64,
}

/// 1 when `x` is zero, else 0, without a branch.
#[inline(always)]
fn is_zero(x: u64) -> u64 {
    1 ^ ((x | x.wrapping_neg()) >> 63)
}

/// One pass over the whole zero-filled buffer with a sliding 8-byte window, branch-free, so
/// the verifier walks a straight line instead of forking on every byte.
#[inline(always)]
fn path_kind(path: u64) -> PathKind {
    const fn tag(s: &[u8]) -> u64 {
        let mut v = 0u64;
        let mut i = 0;
        while i < s.len() {
            v = (v << 8) | s[i] as u64;
            i += 1;
        }
        v
    }
    const SO: u64 = tag(b".so");
    const BCUDA: u64 = tag(b"bcuda");
    const NVML: u64 = tag(b"nvml");
    const NVIDIA_ML: u64 = tag(b"idia-ml");
    const VGPU: u64 = tag(b"vgpu");
    let mut buf = [0u8; SCAN];
    if unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut buf) }.is_err() {
        return PathKind {
            library: false,
            api: false,
            hash: 0,
        };
    }
    let (mut library, mut api, mut hash) = (0u64, 0u64, 0xcbf2_9ce4_8422_2325u64);
    let mut window = 0u64;
    // "libcuda" counts unless an "r" follows (libcudart is the runtime, not the driver).
    let mut cuda_pending = 0u64;
    for &c in buf.iter() {
        let c = c as u64;
        hash = (hash ^ c).wrapping_mul(0x0000_0100_0000_01b3);
        api |= cuda_pending & (1 ^ is_zero(c ^ b'r' as u64));
        window = (window << 8) | c;
        // Names count only in the file name: a "/" forgets what the directories said.
        api &= 1 ^ is_zero(c ^ b'/' as u64);
        library |= is_zero((window & 0xff_ffff) ^ SO);
        cuda_pending = is_zero((window & 0xff_ffff_ffff) ^ BCUDA);
        api |= is_zero((window & 0xffff_ffff) ^ NVML)
            | is_zero((window & 0xff_ffff_ffff_ffff) ^ NVIDIA_ML)
            | is_zero((window & 0xffff_ffff) ^ VGPU);
    }
    PathKind {
        library: library != 0,
        api: api != 0,
        hash,
    }
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
    if path == 0 {
        return;
    }
    let kind = path_kind(path);
    if kind.library {
        let hash = if kind.api { kind.hash } else { 0 };
        let _ = OPEN_PENDING.insert(&pid_tgid, &[path, flags, hash], 0);
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
    let Some(&[path, flags, api_hash]) = (unsafe { OPEN_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = OPEN_PENDING.remove(&pid_tgid);
    let ret = arg(ctx, &SYS_RET_OFF) as i64;
    if ret >= 0 {
        let value = if api_hash != 0 { api_hash } else { 1 };
        let _ = LIB_FDS.insert(&((pid_tgid & !0xffff_ffff) | ret as u64), &value, 0);
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
    let Some(&hash) = (unsafe { LIB_FDS.get(&tracked_fd(pid_tgid, fd)) }) else {
        return;
    };
    let args = [fd, prot, arg(&ctx, &MMAP_LEN_OFF), hash];
    let _ = MMAP_PENDING.insert(&pid_tgid, &args, 0);
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(&[fd, prot, len, hash]) = (unsafe { MMAP_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = MMAP_PENDING.remove(&pid_tgid);
    let addr = arg(&ctx, &SYS_RET_OFF) as i64;
    // A CUDA/NVML library nobody armed yet is now mapped but none of its code has run: hold
    // the process until userspace has put the API uprobes on it.
    let mut stopped = 0;
    if addr >= 0 && hash > 1 && STOP_TO_ARM.load() != 0 && unsafe { ARMED.get(&hash) }.is_none() {
        stopped = u16::from(unsafe { bpf_send_signal_thread(SIGSTOP) } == 0);
    }
    let Some(mut rec) = Record::<LibMmapPayload>::new() else {
        return;
    };
    *rec.payload() = LibMmapPayload {
        addr,
        len,
        fd: fd as u32,
        prot: prot as u16,
        stopped,
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
