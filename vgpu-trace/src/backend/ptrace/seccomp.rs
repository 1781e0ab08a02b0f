//! The seccomp filter `run` installs in the command before its exec, in the spirit of
//! `strace --seccomp-bpf`: only the system calls the backend reads stop the tracee (library
//! opens, executable mappings); every other one runs at full speed. Children inherit it.
//!
//! A filter cannot be taken back. Without a tracer, the calls it sends to one fail with
//! ENOSYS, so the engine serves the command until its end, even after the session's.

/// `struct seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low half of `args[2]` (little-endian): mmap's `prot`.
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

/// open and openat stop (their path decides); mmap stops only when executable. Other
/// architectures (32-bit calls on x86_64) run untouched.
static FILTER: [libc::sock_filter; 10] = [
    stmt(LD_W_ABS, ARCH),
    jump(JEQ_K, AUDIT_ARCH_X86_64, 0, 6),
    stmt(LD_W_ABS, NR),
    jump(JEQ_K, libc::SYS_open as u32, 5, 0),
    jump(JEQ_K, libc::SYS_openat as u32, 4, 0),
    jump(JEQ_K, libc::SYS_mmap as u32, 0, 2),
    stmt(LD_W_ABS, ARG2_LOW),
    jump(JSET_K, PROT_EXEC, 1, 0),
    stmt(RET_K, SECCOMP_RET_ALLOW),
    stmt(RET_K, SECCOMP_RET_TRACE),
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
