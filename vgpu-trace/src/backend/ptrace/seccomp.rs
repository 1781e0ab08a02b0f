//! The seccomp filter `run` installs in the command before its exec, in the spirit of
//! `strace --seccomp-bpf`: only the system calls the backend reads stop the tracee (library
//! opens, executable mappings, writes to stdout and stderr); every other one runs at full
//! speed. Children inherit it.
//!
//! A filter cannot be taken back. Without a tracer, the calls it sends to one fail with
//! ENOSYS, so the engine serves the command until its end, even after the session's.

/// `struct seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low half of `args[0]` (little-endian): write's fd.
const ARG0_LOW: u32 = 16;
/// The low half of `args[2]`: mmap's `prot`.
const ARG2_LOW: u32 = 16 + 2 * 8;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const PROT_EXEC: u32 = 4;

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// open and openat stop (their path decides); mmap stops only when executable; write only to
/// stdout or stderr (the output the trace keeps). Other architectures (32-bit calls on x86_64)
/// run untouched. Jump offsets count the instructions skipped.
static FILTER: [libc::sock_filter; 14] = [
    /* 0 */ stmt(LD_W_ABS, ARCH),
    /* 1 */ jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 10),
    /* 2 */ stmt(LD_W_ABS, NR),
    /* 3 */ jump(JEQ_K, libc::SYS_open as u32, 9, 0),
    /* 4 */ jump(JEQ_K, libc::SYS_openat as u32, 8, 0),
    /* 5 */ jump(JEQ_K, libc::SYS_write as u32, 3, 0),
    /* 6 */ jump(JEQ_K, libc::SYS_mmap as u32, 0, 5),
    /* 7 */ stmt(LD_W_ABS, ARG2_LOW),
    /* 8 */ jump(JSET_K, PROT_EXEC, 4, 3),
    /* 9 */ stmt(LD_W_ABS, ARG0_LOW),
    /* 10 */ jump(JEQ_K, 1, 2, 0),
    /* 11 */ jump(JEQ_K, 2, 1, 0),
    /* 12 */ stmt(RET_K, SECCOMP_RET_ALLOW),
    /* 13 */ stmt(RET_K, SECCOMP_RET_TRACE),
];

/// The filter program, built before the fork (the child may only make system calls).
pub fn program() -> libc::sock_fprog {
    libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr().cast_mut(),
    }
}

/// Installs `prog` in the calling (forked, about to exec) process. Async-signal-safe: raw
/// system calls only. A process without CAP_SYS_ADMIN must first give up gaining privileges
/// (setuid programs then run without theirs, as under `strace --seccomp-bpf`).
pub fn install(prog: &libc::sock_fprog) -> bool {
    // SAFETY: `prog` points at a static filter; the calls take no other pointers.
    unsafe {
        let set = || {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                prog as *const libc::sock_fprog,
            ) == 0
        };
        set() || (libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && set())
    }
}

/// Whether `pid` runs under a seccomp filter (mode 2 in /proc/PID/status).
pub fn filtered(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
    })
}
