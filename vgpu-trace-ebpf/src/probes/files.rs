//! What ld.so does that no dlopen uprobe sees: the library paths it tries (openat, with the
//! result), the files it maps executable (mmap PROT_EXEC of such an fd), and their closing.
//! Called from `syscalls.rs` for followed processes only; filtered to paths containing ".so",
//! so other opens leave nothing in the ring buffer.
use aya_ebpf::{
    Global,
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP},
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_current_task, bpf_ktime_get_boot_ns, bpf_send_signal_thread},
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};

use vgpu_trace_common::path::{PATH_READ, PathScan, SCAN_WORDS, scan_window};
use vgpu_trace_common::{
    ArmRequest, EventKind, LibClosePayload, LibMmapPayload, LibOpenPayload, error_index, offsets,
};

use crate::emit::{Record, Space};
use crate::kernel::read_at;
use crate::maps::{ARM_REQUESTS, count_error};

const PROT_EXEC: u64 = 4;
const SIGSTOP: u32 = 19;

/// Index 0: 1 while a process that maps an unarmed CUDA/NVML library may be stopped until it
/// is armed (see `LibMmapPayload::stopped`). Userspace opens it once the hold guard runs; the
/// guard closes it when the tracer is gone.
#[map]
static HOLD_GATE: Array<u32> = Array::with_max_entries(1, 0);
/// Every hold, written before the stop: hold time (`ArmRequest::ts_ns`) → tgid. Whoever
/// releases holds (the tracer, or its guard if the tracer is gone) finds them all here.
#[map]
static HOLDS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);
/// `file_key`s of CUDA/NVML libraries whose API uprobes userspace has armed.
#[map]
static ARMED: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

// From an fd to its file's identity: task_struct.files, files_struct.fdt, fdtable.{max_fds,
// fd}, file.f_inode, inode.{i_ino, i_sb}, super_block.s_dev (from kernel BTF).
#[unsafe(no_mangle)]
static TASK_FILES_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static FILES_FDT_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static FDT_MAX_FDS_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static FDT_FD_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static FILE_INODE_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static INODE_INO_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static INODE_SB_OFF: Global<u32> = Global::new(offsets::UNKNOWN);
#[unsafe(no_mangle)]
static SB_DEV_OFF: Global<u32> = Global::new(offsets::UNKNOWN);

/// `LIB_FDS` value of a library whose identity could not be read: never in `ARMED`, so its
/// mapping always asks for arming (and userspace finds it armed by identity, quickly).
const UNKNOWN_FILE: u64 = 2;
/// Where a path is read to be scanned, per CPU (a whole path would not fit on the stack): from
/// word `LEAD` on. The words before it are never written, so they stay zero. Twice the room a
/// path needs, so that an index masked by a power of two stays in it.
#[map]
static PATH_BUF: PerCpuArray<[u64; PATH_WORDS]> = PerCpuArray::with_max_entries(1, 0);
const PATH_WORDS: usize = 2 * (PATH_READ / 8);
const _: () = assert!(LEAD + PATH_READ / 8 + SCAN_WORDS <= PATH_WORDS);
/// Zero words before the path: a window of `SCAN_WORDS` that reaches before a short path's
/// start reads them, and leading zeros leave a scan's state as it was.
const LEAD: usize = SCAN_WORDS;

/// An openat of a library-looking path in flight: (filename pointer, flags, 1 if it looks
/// like a CUDA/NVML library else 0) by thread.
#[map]
static OPEN_PENDING: LruHashMap<u64, [u64; 3]> = LruHashMap::with_max_entries(4096, 0);
/// fds (tgid << 32 | fd) opened on library-looking paths and not yet closed: the file's
/// `file_key` when it looks like a CUDA/NVML library, else 1.
#[map]
static LIB_FDS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);
/// An executable mmap of such an fd in flight: (fd, prot, len, LIB_FDS value) by thread.
#[map]
static MMAP_PENDING: LruHashMap<u64, [u64; 4]> = LruHashMap::with_max_entries(4096, 0);

/// What a path looks like (`vgpu_trace_common::path`, shared with userspace).
struct PathKind {
    library: bool,
    api: bool,
}

/// The path's last words, scanned a word at a time (`vgpu_trace_common::path`). No branch, not
/// even for a short path (the zero words before it stand in): the verifier walks the
/// `SCAN_WORDS` words once, on every kernel.
#[inline(always)]
fn path_kind(path: u64) -> PathKind {
    const NOTHING: PathKind = PathKind {
        library: false,
        api: false,
    };
    const MASK: usize = PATH_WORDS - 1;
    let Some(words) = PATH_BUF.get_ptr_mut(0) else {
        return NOTHING;
    };
    // SAFETY: a per-CPU slot, this program's alone while it runs.
    let words = unsafe { &mut *words };
    let buf = unsafe {
        core::slice::from_raw_parts_mut(words.as_mut_ptr().add(LEAD).cast::<u8>(), PATH_READ)
    };
    let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes(path as *const u8, buf) }) else {
        return NOTHING;
    };
    let len = read.len();
    // The bytes after the NUL in its word are an earlier path's: zero them (a mask of none
    // when the NUL starts the word).
    words[(LEAD + len / 8) & MASK] &= (1u64 << (8 * (len % 8))) - 1;
    // The window's last word holds the NUL: words `end - SCAN_WORDS .. end` of the path, or
    // `end .. end + SCAN_WORDS` of the buffer.
    let end = scan_window(len).end;
    let mut scan = PathScan::new();
    for turn in 0..SCAN_WORDS {
        scan.word(words[(end + turn) & MASK]);
    }
    PathKind {
        library: scan.library(),
        api: scan.api(),
    }
}

/// openat/openat2 of a followed process: remember a library-looking path until the result.
#[inline(always)]
pub fn open_enter(pid_tgid: u64, path: u64, flags: u64) {
    if path == 0 {
        return;
    }
    let kind = path_kind(path);
    if kind.library {
        let _ = OPEN_PENDING.insert(&pid_tgid, &[path, flags, u64::from(kind.api)], 0);
    }
}

#[inline(always)]
pub fn open_exit(pid_tgid: u64, ret: i64) {
    let Some(&[path, flags, api]) = (unsafe { OPEN_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = OPEN_PENDING.remove(&pid_tgid);
    if ret >= 0 {
        let value = if api != 0 {
            file_key(ret as u64).unwrap_or(UNKNOWN_FILE)
        } else {
            1
        };
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
    // A library found: userspace reads it while the process, and the file, are there.
    if ret >= 0 {
        rec.send_now(EventKind::LibOpen);
    } else {
        rec.send(EventKind::LibOpen);
    }
}

#[inline(always)]
fn tracked_fd(pid_tgid: u64, fd: u64) -> u64 {
    (pid_tgid & !0xffff_ffff) | (fd & 0xffff_ffff)
}

/// mmap by a followed process: an executable mapping of a library fd is a load.
#[inline(always)]
pub fn mmap_enter(pid_tgid: u64, fd: u64, prot: u64, len: u64) {
    if prot & PROT_EXEC == 0 {
        return;
    }
    let Some(&key) = (unsafe { LIB_FDS.get(&tracked_fd(pid_tgid, fd)) }) else {
        return;
    };
    let _ = MMAP_PENDING.insert(&pid_tgid, &[fd, prot, len, key], 0);
}

#[inline(always)]
pub fn mmap_exit(pid_tgid: u64, addr: i64) {
    let Some(&[fd, prot, len, key]) = (unsafe { MMAP_PENDING.get(&pid_tgid) }) else {
        return;
    };
    let _ = MMAP_PENDING.remove(&pid_tgid);
    let stopped = if addr >= 0 && key > 1 && unsafe { ARMED.get(&key) }.is_none() {
        request_arming(pid_tgid, fd, key)
    } else {
        0
    };
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

/// A CUDA/NVML library nobody armed yet is now mapped, but none of its code has run: ask
/// userspace to put the API uprobes on it, and hold the process (`STOP_TO_ARM`) until it has.
/// Room for the request is taken first: a process is never stopped without one. Returns 1
/// when the process was stopped.
#[inline(always)]
fn request_arming(pid_tgid: u64, fd: u64, key: u64) -> u16 {
    let Some(mut entry) = ARM_REQUESTS.reserve::<ArmRequest>(0) else {
        count_error(error_index::ARM_RING_FULL);
        return 0;
    };
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    let stopped = hold((pid_tgid >> 32) as u32, ts_ns);
    entry.write(ArmRequest {
        ts_ns,
        pid_tgid,
        key,
        fd: fd as u32,
        stopped: stopped as u32,
    });
    entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
    u16::from(stopped)
}

/// Stops the current process, if holds are allowed and the hold could be written down first:
/// a process is never stopped where nobody could find it to release it.
#[inline(always)]
fn hold(tgid: u32, ts_ns: u64) -> bool {
    if HOLD_GATE.get(0).copied().unwrap_or(0) == 0 {
        return false;
    }
    if HOLDS.insert(&ts_ns, &tgid, u64::from(BPF_NOEXIST)).is_err() {
        return false;
    }
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        let _ = HOLDS.remove(&ts_ns);
        return false;
    }
    true
}

/// The `file_key` of the current process's open `fd`.
#[inline(always)]
fn file_key(fd: u64) -> Option<u64> {
    let task = unsafe { bpf_get_current_task() };
    let files = read_at::<u64>(task, &TASK_FILES_OFF)?;
    let fdt = read_at::<u64>(files, &FILES_FDT_OFF)?;
    let max_fds = read_at::<u32>(fdt, &FDT_MAX_FDS_OFF)?;
    if fd >= u64::from(max_fds) {
        return None;
    }
    let fds = read_at::<u64>(fdt, &FDT_FD_OFF)?;
    let file = unsafe { bpf_probe_read_kernel((fds + fd * 8) as *const u64) }.ok()?;
    let inode = read_at::<u64>(file, &FILE_INODE_OFF)?;
    let ino = read_at::<u64>(inode, &INODE_INO_OFF)?;
    let sb = read_at::<u64>(inode, &INODE_SB_OFF)?;
    let dev = read_at::<u32>(sb, &SB_DEV_OFF)?;
    Some(vgpu_trace_common::file_key(dev, ino))
}

/// close by a followed process: a library fd's end.
#[inline(always)]
pub fn close(pid_tgid: u64, fd: u64) {
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
