//! Wire format between the eBPF programs and userspace.
//!
//! Every ring-buffer record is `EventHeader`, then the fixed payload of its kind, then
//! `header.blob_len` bytes of variable data (a string, or NUL-separated strings). Records are
//! written with `bpf_ringbuf_output` at their real length, so short names cost little room.
//! Everything here is plain `#[repr(C)]` data without implicit padding; sizes are asserted.
#![no_std]
// `path::opaque`: an empty asm statement hides a value from LLVM (the eBPF build allows it).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use core::mem::size_of;

/// Longest string the kernel side copies (PATH_MAX); longer ones are cut and flagged.
pub const STR_MAX: usize = 4096;
/// Most argv entries kept from an `execve` (and copied from a failed one).
pub const ARGV_MAX: usize = 32;
/// Bytes of a new program's argument area (`mm->arg_start..arg_end`) copied at exec: one
/// record's blob.
pub const EXEC_ARGV_BYTES: usize = BLOB_ROOM;
/// Records of up to `BLOB_ROOM` bytes each that carry a new program's environment area; the
/// allowlist is applied in userspace (`env_allowlisted`).
pub const EXEC_ENV_CHUNKS: usize = 4;
pub const EXEC_ENV_BYTES: usize = EXEC_ENV_CHUNKS * BLOB_ROOM;
/// Room for the blob in the per-CPU scratch buffer: twice `STR_MAX`, so that a write at any
/// offset below `STR_MAX` of up to `STR_MAX` bytes stays in bounds for the verifier.
pub const BLOB_ROOM: usize = 2 * STR_MAX;
/// Bytes before the blob in the scratch buffer: header plus the largest fixed payload.
pub const BLOB_OFFSET: usize = 48;
/// Size of the per-CPU scratch buffer records are assembled in.
pub const SCRATCH_SIZE: usize = BLOB_OFFSET + BLOB_ROOM;

/// `blob_flags` bits.
pub mod api;
pub mod path;

pub mod blob_flags {
    /// The data was longer than the room for it and was cut.
    pub const TRUNCATED: u16 = 1 << 0;
    /// Reading user memory failed (unmapped page, bad pointer).
    pub const READ_FAILED: u16 = 1 << 1;
    /// The pointer argument was NULL (e.g. `dlopen(NULL, ...)`).
    pub const NULL_PTR: u16 = 1 << 2;
}

/// Record kinds. Numbered in families; never reuse a number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `sched_process_exec`: payload `ExecPayload`, blob = new executable's path. Its
    /// `ExecArea` records come just before it, from the same thread.
    Exec = 1,
    /// `sys_exit` of a failed execve/execveat: payload `ExecFailPayload`, blob = filename NUL
    /// argv[0] NUL ...
    ExecFail = 4,
    /// Part of a new program's argument or environment area, as the kernel laid it out on its
    /// stack (NUL-separated strings): payload `ExecAreaPayload`, blob = those bytes.
    ExecArea = 7,
    /// `sched_process_fork` of a new process: payload `ForkPayload`.
    Fork = 5,
    /// `sched_process_exit`: payload `ExitPayload`.
    Exit = 6,
    /// Entry of a `dl*` function: payload `DlEnterPayload`, blob = name (dlvsym: name NUL version).
    DlEnter = 20,
    /// Return of a `dl*` function: payload `DlReturnPayload`; blob items (each NUL-terminated)
    /// as `dl_return_flags` says.
    DlReturn = 21,
    /// Non-NULL return of `dlerror`: no payload, blob = the message.
    DlError = 22,
    /// `open`/`openat`/`openat2` of a library-looking path (`.so` in it): payload `LibOpenPayload`,
    /// blob = the path as passed.
    LibOpen = 30,
    /// `mmap` with PROT_EXEC of an fd from a `LibOpen`: payload `LibMmapPayload`.
    LibMmap = 31,
    /// `close` of an fd from a `LibOpen`: payload `LibClosePayload`.
    LibClose = 32,
    /// Return of a traced CUDA/NVML discovery function: payload `api::ApiReturnPayload`,
    /// blob = its string argument, if `api::SPECS` names one.
    ApiReturn = 40,
    /// `write` to stdout or stderr: payload `OutputPayload`, blob = the first `OUTPUT_MAX`
    /// bytes written.
    Output = 50,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Exec,
            4 => Self::ExecFail,
            7 => Self::ExecArea,
            5 => Self::Fork,
            6 => Self::Exit,
            20 => Self::DlEnter,
            21 => Self::DlReturn,
            22 => Self::DlError,
            30 => Self::LibOpen,
            31 => Self::LibMmap,
            32 => Self::LibClose,
            40 => Self::ApiReturn,
            50 => Self::Output,
            _ => return None,
        })
    }

    /// Size of the fixed payload between the header and the blob.
    /// Exhaustive on purpose: a new kind without a size does not compile.
    pub const fn payload_size(self) -> usize {
        match self {
            Self::Exec => size_of::<ExecPayload>(),
            Self::ExecFail => size_of::<ExecFailPayload>(),
            Self::ExecArea => size_of::<ExecAreaPayload>(),
            Self::Fork => size_of::<ForkPayload>(),
            Self::Exit => size_of::<ExitPayload>(),
            Self::DlEnter => size_of::<DlEnterPayload>(),
            Self::DlReturn => size_of::<DlReturnPayload>(),
            Self::DlError => 0,
            Self::LibOpen => size_of::<LibOpenPayload>(),
            Self::LibMmap => size_of::<LibMmapPayload>(),
            Self::LibClose => size_of::<LibClosePayload>(),
            Self::ApiReturn => size_of::<api::ApiReturnPayload>(),
            Self::Output => size_of::<OutputPayload>(),
        }
    }
}

/// Which `dl*` function a `DlEnter` / `DlReturn` record is about. Also the uprobe cookie.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DlFunc {
    Dlopen = 1,
    Dlmopen = 2,
    Dlsym = 3,
    Dlvsym = 4,
    Dlclose = 5,
}

/// The return probe's cookie for `dlerror`, which shares the `dl*` return program: its text
/// explains the thread's last failure (a `DlError` record). Not a `DlFunc`: it has no entry.
pub const DLERROR_COOKIE: u32 = 6;

impl DlFunc {
    /// The functions traced from entry to return.
    pub const CALLS: [DlFunc; 5] = [
        Self::Dlopen,
        Self::Dlmopen,
        Self::Dlsym,
        Self::Dlvsym,
        Self::Dlclose,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::CALLS.into_iter().find(|f| *f as u32 == v)
    }

    /// The libc symbol probed.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Dlopen => "dlopen",
            Self::Dlmopen => "dlmopen",
            Self::Dlsym => "dlsym",
            Self::Dlvsym => "dlvsym",
            Self::Dlclose => "dlclose",
        }
    }
}

/// Common head of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_boot_ns()`: comparable with /proc start times.
    pub ts_ns: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high half, thread id in the low half.
    pub pid_tgid: u64,
    /// An `EventKind`.
    pub kind: u32,
    /// Bytes of variable data after the fixed payload.
    pub blob_len: u16,
    /// `blob_flags` bits.
    pub blob_flags: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecPayload {
    /// Thread id that called execve (differs from the tgid when a non-leader thread execs).
    pub old_tid: u32,
    pub _pad: u32,
    /// `comm` after the exec.
    pub comm: [u8; 16],
}

/// Which area of a new program an `ExecArea` record holds.
pub mod exec_area {
    pub const ARGV: u32 = 0;
    pub const ENV: u32 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecAreaPayload {
    /// An `exec_area` value.
    pub area: u32,
    /// Where the blob starts in the area.
    pub offset: u32,
    /// The area's whole length (more than was copied when the blob is flagged `TRUNCATED`).
    pub total: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecFailPayload {
    /// Negative errno returned by execve.
    pub ret: i64,
    /// Number of argv entries in the blob (after the filename).
    pub argc: u32,
    /// 1 when argv had more entries than `ARGV_MAX` (or they did not fit).
    pub more: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkPayload {
    /// Thread id of the new process's first thread (its tgid).
    pub child_tgid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitPayload {
    /// `task_struct.exit_code` as a wait status (`code << 8` or the signal number).
    pub exit_code: u32,
    /// 1 when this was the last thread: the process is gone.
    pub group_dead: u32,
    /// 1 when `exit_code` could be read (its offset is known from BTF).
    pub code_known: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DlEnterPayload {
    /// A `DlFunc`.
    pub func: u32,
    /// dlopen/dlmopen: the mode flags.
    pub mode: u32,
    /// dlsym/dlvsym/dlclose: the handle; dlmopen: the namespace id.
    pub arg: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DlReturnPayload {
    /// A `DlFunc`.
    pub func: u32,
    /// `dl_return_flags`: what the blob holds.
    pub flags: u32,
    /// The return value (handle, symbol address, or dlclose's int).
    pub ret: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LibOpenPayload {
    /// The fd, or a negative errno.
    pub ret: i64,
    /// The open flags.
    pub flags: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LibMmapPayload {
    /// The mapped address, or a negative errno.
    pub addr: i64,
    pub len: u64,
    pub fd: u32,
    pub prot: u16,
    /// 1 when the kernel stopped the process (SIGSTOP) right after mapping a CUDA/NVML library
    /// nobody armed yet, so that userspace can put the API uprobes on it before any of its code
    /// runs (constructors included); userspace continues it.
    pub stopped: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LibClosePayload {
    pub fd: u32,
    pub _pad: u32,
}

/// What a traced process writes to its stdout or stderr (Ollama's log) is kept up to this
/// many bytes a write.
pub const OUTPUT_MAX: usize = 4096;
/// And up to this many bytes a second a process: a program that floods its output must not
/// crowd out library events.
pub const OUTPUT_BUDGET_PER_S: u64 = 64 << 10;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OutputPayload {
    /// 1 or 2.
    pub fd: u32,
    pub _pad: u32,
    /// The bytes the write asked to write (the blob holds up to `OUTPUT_MAX` of them).
    pub count: u64,
}

/// A CUDA/NVML library a followed process just mapped and nobody armed yet, sent on its own
/// ring (`ARM_REQUESTS`) so that arming never waits behind the event stream.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ArmRequest {
    /// When the process was stopped (`bpf_ktime_get_boot_ns`).
    pub ts_ns: u64,
    pub pid_tgid: u64,
    /// The file's `file_key`, marked in `ARMED` once done.
    pub key: u64,
    /// The mapped fd, still open: the file is reached as /proc/PID/fd/FD.
    pub fd: u32,
    /// 1 when the process was stopped and waits for SIGCONT.
    pub stopped: u32,
}

const _: () = assert!(size_of::<ArmRequest>() == 32);
const _: () = assert!(size_of::<LibOpenPayload>() == 16);
const _: () = assert!(size_of::<LibMmapPayload>() == 24);
const _: () = assert!(size_of::<LibClosePayload>() == 8);
const _: () = assert!(size_of::<EventHeader>() == 24);
const _: () = assert!(size_of::<ExecPayload>() == 24);
const _: () = assert!(size_of::<ExecAreaPayload>() == 16);
const _: () = assert!(size_of::<ExecFailPayload>() == 16);
const _: () = assert!(size_of::<ForkPayload>() == 8);
const _: () = assert!(size_of::<ExitPayload>() == 16);
const _: () = assert!(size_of::<DlEnterPayload>() == 16);
const _: () = assert!(size_of::<DlReturnPayload>() == 16);
const _: () = assert!(size_of::<EventHeader>() + size_of::<ExecPayload>() <= BLOB_OFFSET);
const _: () = assert!(SCRATCH_SIZE.is_multiple_of(8));

/// Environment variables worth keeping: `NAME=` prefixes and `NAME_` families. The kernel
/// copies a new program's whole environment area; userspace keeps only these.
pub const ENV_ALLOWLIST: [&str; 7] = [
    "LD_LIBRARY_PATH=",
    "LD_PRELOAD=",
    "CUDA_VISIBLE_DEVICES=",
    "NVIDIA_",
    "OLLAMA_",
    "GGML_",
    // The reference shims' configuration (virtual GPU, injected failures, pass-through).
    "VGPU_",
];

/// Whether a `NAME=value` environment entry is one vgpu-trace keeps.
pub fn env_allowlisted(entry: &[u8]) -> bool {
    ENV_ALLOWLIST
        .iter()
        .any(|p| entry.starts_with(p.as_bytes()))
}

/// What a `DlReturn` blob holds, in this order.
pub mod dl_return_flags {
    /// The name (dlvsym: name, version) read again at return, because the entry could not
    /// read it (a string in a page not yet faulted in).
    pub const LATE_NAME: u32 = 1;
    /// dlopen/dlmopen: the loaded object's path, `l_name` of the returned `struct link_map`.
    pub const LOADED_PATH: u32 = 2;
}

/// Per-CPU error counters (`ERRORS` map), by index.
pub mod error_index {
    /// The ring buffer was full: a record was lost.
    pub const RINGBUF_FULL: u32 = 0;
    /// No per-CPU scratch slot was free (each was assembling a record of a program preempted
    /// on that CPU, on kernels that preempt BPF programs): a record was not made.
    pub const NO_SCRATCH: u32 = 1;
    /// Inserting into the followed-process map failed (map full).
    pub const FOLLOW_MAP_FULL: u32 = 2;
    /// A new CUDA/NVML library could not be announced for arming (its ring was full); the
    /// process was not stopped, and its first calls may go unseen.
    pub const ARM_RING_FULL: u32 = 3;
    /// A write to stdout or stderr was not kept: its process was over its output budget.
    pub const OUTPUT_OVER_BUDGET: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// Offsets of kernel struct members, read by userspace from BTF at start-up, so no kernel's
/// layout is compiled in. `UNKNOWN` marks a member that is absent.
pub mod offsets {
    pub const UNKNOWN: u32 = u32::MAX;
}

/// Names of the programs, used by both sides. The uprobe programs come in three sets, one per
/// way a kernel can attach them; userspace loads one set (see the eBPF crate's `dl.rs`).
pub mod programs {
    use crate::{DLERROR_COOKIE, DlFunc};

    /// Raw tracepoints, each attached to the tracepoint of its name.
    pub const TRACEPOINTS: [&str; 5] = [
        "sched_process_exec",
        "sched_process_exit",
        "sched_process_fork",
        "sys_enter",
        "sys_exit",
    ];

    /// The programs `sys_enter` and `sys_exit` tail-call, by `syscall_slot`: (program, map,
    /// slot). Loaded, never attached.
    pub const SYSCALLS: [(&str, &str, u32); 8] = {
        use crate::syscall_slot::*;
        [
            ("sys_enter_open", super::names::SYS_ENTER_PROGRAMS, OPEN),
            ("sys_enter_mmap", super::names::SYS_ENTER_PROGRAMS, MMAP),
            ("sys_enter_close", super::names::SYS_ENTER_PROGRAMS, CLOSE),
            ("sys_enter_write", super::names::SYS_ENTER_PROGRAMS, WRITE),
            ("sys_enter_exec", super::names::SYS_ENTER_PROGRAMS, EXEC),
            ("sys_exit_open", super::names::SYS_EXIT_PROGRAMS, OPEN),
            ("sys_exit_mmap", super::names::SYS_EXIT_PROGRAMS, MMAP),
            ("sys_exit_exec", super::names::SYS_EXIT_PROGRAMS, EXEC),
        ]
    };

    /// uprobe_multi links, the function in the cookie: dl entry, dl return, API entry, API
    /// return.
    pub const MULTI: [&str; 4] = ["dl_enter", "dl_return", "api_enter", "api_return"];
    /// Perf-event uprobes, the function in the cookie.
    pub const ONE: [&str; 4] = [
        "dl_enter_one",
        "dl_return_one",
        "api_enter_one",
        "api_return_one",
    ];

    /// Without cookies: the entry program of a `dl*` function.
    pub const fn dl_enter(func: DlFunc) -> &'static str {
        match func {
            DlFunc::Dlopen => "dl_enter_dlopen",
            DlFunc::Dlmopen => "dl_enter_dlmopen",
            DlFunc::Dlsym => "dl_enter_dlsym",
            DlFunc::Dlvsym => "dl_enter_dlvsym",
            DlFunc::Dlclose => "dl_enter_dlclose",
        }
    }

    /// Without cookies: the return program of a `DlFunc` or of `dlerror` (`DLERROR_COOKIE`).
    pub fn dl_return(id: u32) -> Option<&'static str> {
        Some(match DlFunc::from_u32(id) {
            Some(DlFunc::Dlopen) => "dl_return_dlopen",
            Some(DlFunc::Dlmopen) => "dl_return_dlmopen",
            Some(DlFunc::Dlsym) => "dl_return_dlsym",
            Some(DlFunc::Dlvsym) => "dl_return_dlvsym",
            Some(DlFunc::Dlclose) => "dl_return_dlclose",
            None if id == DLERROR_COOKIE => "dl_return_dlerror",
            None => return None,
        })
    }

    /// Without cookies: the return program of `api::SPECS` entry `id` (1-based).
    pub fn api_return(id: u32) -> Option<&'static str> {
        API_RETURN.get((id as usize).checked_sub(1)?).copied()
    }

    const API_RETURN: [&str; crate::api::SPECS.len()] = [
        "api_return_1",
        "api_return_2",
        "api_return_3",
        "api_return_4",
        "api_return_5",
        "api_return_6",
        "api_return_7",
        "api_return_8",
        "api_return_9",
        "api_return_10",
        "api_return_11",
        "api_return_12",
        "api_return_13",
        "api_return_14",
        "api_return_15",
        "api_return_16",
        "api_return_17",
        "api_return_18",
        "api_return_19",
        "api_return_20",
        "api_return_21",
    ];
}

/// Where each wanted syscall's program sits in `SYS_ENTER_PROGRAMS` / `SYS_EXIT_PROGRAMS`.
pub mod syscall_slot {
    pub const OPEN: u32 = 0;
    pub const MMAP: u32 = 1;
    pub const CLOSE: u32 = 2;
    pub const WRITE: u32 = 3;
    pub const EXEC: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// How many process names the kernel can follow from their exec (`FOLLOW_COMMS`).
pub const FOLLOW_COMMS_MAX: usize = 4;

/// Names of maps and globals, used by both sides.
pub mod names {
    /// The programs the syscall dispatchers tail-call.
    pub const SYS_ENTER_PROGRAMS: &str = "SYS_ENTER_PROGRAMS";
    pub const SYS_EXIT_PROGRAMS: &str = "SYS_EXIT_PROGRAMS";
    pub const EVENTS: &str = "EVENTS";
    pub const FOLLOWED: &str = "FOLLOWED";
    pub const ERRORS: &str = "ERRORS";
    pub const FOLLOW_ALL: &str = "FOLLOW_ALL";
    /// The followed cgroup's v2 id and depth (`attach --cgroup`/`--unit`).
    pub const FOLLOW_CGROUP_ID: &str = "FOLLOW_CGROUP_ID";
    pub const FOLLOW_CGROUP_LEVEL: &str = "FOLLOW_CGROUP_LEVEL";
    /// Process names (comm, zero-padded to 16 bytes, as two words each) followed from their
    /// exec: `watch ollama` picks up each new serve.
    pub const FOLLOW_COMMS: &str = "FOLLOW_COMMS";
    /// 1: keep what followed processes write to stdout and stderr.
    pub const CAPTURE_OUTPUT: &str = "CAPTURE_OUTPUT";
    pub const SELF_TGID: &str = "SELF_TGID";
    /// Bytes waiting in `EVENTS` from which a record wakes the reader.
    pub const WAKE_AT: &str = "WAKE_AT";
    /// `file_key`s of CUDA/NVML libraries whose API probes are armed.
    pub const ARMED: &str = "ARMED";
    /// `ArmRequest`s, apart from `EVENTS`.
    pub const ARM_REQUESTS: &str = "ARM_REQUESTS";
    /// Index 0: 1 while processes may be held (stopped) for arming; 0 stops new holds.
    pub const HOLD_GATE: &str = "HOLD_GATE";
    /// Processes held for arming: the hold's `ts_ns` (its `ArmRequest`'s) → tgid.
    pub const HOLDS: &str = "HOLDS";
}

/// How the kernel and userspace name a file in `ARMED`: its device (the kernel's `dev_t`,
/// `major << 20 | minor`) and inode, mixed into one word. By identity, so a library reached
/// through a link or another directory is the file armed already.
pub const fn file_key(kernel_dev: u32, ino: u64) -> u64 {
    ino.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (kernel_dev as u64)
}
