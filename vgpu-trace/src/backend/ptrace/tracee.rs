//! Reading a stopped tracee: its system call (PTRACE_GET_SYSCALL_INFO), its memory
//! (process_vm_readv) and what /proc says of it.
use nix::unistd::Pid;

use crate::text::Text;

/// `struct ptrace_syscall_info` (linux/ptrace.h), declared here because not every libc
/// target (musl) carries it.
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallInfo {
    op: u8,
    _pad: [u8; 3],
    _arch: u32,
    _ip: u64,
    _sp: u64,
    /// entry: nr, args[6]; exit: rval, is_error.
    data: [u64; 8],
}

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const OP_ENTRY: u8 = 1;
const OP_EXIT: u8 = 2;
/// A seccomp stop: laid out as an entry (nr, args), before the call runs.
const OP_SECCOMP: u8 = 3;

/// Where a thread stands in a system call, at a syscall stop.
pub enum SyscallStop {
    Entry { nr: u64, args: [u64; 6] },
    Exit { ret: i64 },
    Other,
}

pub fn syscall_stop(tid: Pid) -> SyscallStop {
    let mut info = SyscallInfo {
        op: 0,
        _pad: [0; 3],
        _arch: 0,
        _ip: 0,
        _sp: 0,
        data: [0; 8],
    };
    // SAFETY: the kernel writes at most size_of::<SyscallInfo>() bytes into `info`.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_INFO as _,
            tid.as_raw(),
            size_of::<SyscallInfo>(),
            &mut info as *mut SyscallInfo,
        )
    };
    if rc <= 0 {
        return SyscallStop::Other;
    }
    match info.op {
        OP_ENTRY | OP_SECCOMP => {
            let mut args = [0; 6];
            args.copy_from_slice(&info.data[1..7]);
            SyscallStop::Entry {
                nr: info.data[0],
                args,
            }
        }
        OP_EXIT => SyscallStop::Exit {
            ret: info.data[0] as i64,
        },
        _ => SyscallStop::Other,
    }
}

/// The NUL-terminated string at `addr` in `pid`, up to `max` bytes (flagged when cut or
/// unreadable), read a page at a time so that the end of a mapping stops only the rest.
pub fn read_string(pid: Pid, addr: u64, max: usize) -> Text {
    let mut bytes = Vec::new();
    let mut at = addr;
    let mut unreadable = false;
    while bytes.len() < max {
        let page_left = 4096 - (at % 4096) as usize;
        let want = page_left.min(max - bytes.len());
        let mut buf = vec![0u8; want];
        let n = read_into(pid, at, &mut buf);
        if n <= 0 {
            unreadable = true;
            break;
        }
        let got = &buf[..n as usize];
        if let Some(end) = got.iter().position(|b| *b == 0) {
            bytes.extend_from_slice(&got[..end]);
            return Text::from_bytes(&bytes);
        }
        bytes.extend_from_slice(got);
        at += n as u64;
    }
    let mut text = Text::from_bytes(&bytes);
    text.truncated = !unreadable;
    text.unreadable = unreadable;
    text
}

/// The thread group `tid` belongs to, from /proc.
pub fn tgid_of(tid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Up to `max` bytes of /proc/PID/`file` (cmdline, environ), and the whole length.
pub fn proc_area(pid: u32, file: &str, max: usize) -> (Vec<u8>, usize) {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let total = bytes.len();
    (bytes.into_iter().take(max).collect(), total)
}

/// The 64-bit word at `addr` in the address space of the stopped thread `tid`.
pub fn peek(tid: Pid, addr: u64) -> Option<u64> {
    nix::sys::ptrace::read(tid, addr as nix::sys::ptrace::AddressType)
        .ok()
        .map(|w| w as u64)
}

/// Writes the 64-bit word at `addr` (text pages too: ptrace writes through their protection).
pub fn poke(tid: Pid, addr: u64, value: u64) -> Option<()> {
    nix::sys::ptrace::write(tid, addr as nix::sys::ptrace::AddressType, value as i64).ok()
}

/// Replaces the byte at `addr`; returns the one it held.
pub fn swap_byte(tid: Pid, addr: u64, byte: u8) -> Option<u8> {
    let word = peek(tid, addr)?;
    poke(tid, addr, (word & !0xff) | u64::from(byte))?;
    Some(word as u8)
}

/// Writes single bytes into `tgid`'s memory through /proc/PID/mem, which, unlike
/// PTRACE_POKEDATA, needs no thread of it stopped (text pages too: the tracer may write
/// through their protection). Whether every byte was written.
pub fn write_bytes(tgid: u32, bytes: impl Iterator<Item = (u64, u8)>) -> bool {
    use std::os::unix::fs::FileExt as _;
    let Ok(mem) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{tgid}/mem"))
    else {
        return false;
    };
    let mut all = true;
    for (at, byte) in bytes {
        all &= mem.write_at(&[byte], at).is_ok_and(|n| n == 1);
    }
    all
}

/// Whether `tid` has a SIGTRAP or SIGSEGV queued but not yet delivered: a breakpoint or the
/// return trap met just as the thread was interrupted. It must not be let go before then.
pub fn fault_pending(tgid: u32, tid: Pid) -> bool {
    const MASK: u64 = 1 << (libc::SIGTRAP - 1) | 1 << (libc::SIGSEGV - 1);
    std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("SigPnd:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|pending| pending & MASK != 0)
}

/// Up to `len` bytes at `addr`, fewer where the mapping ends.
pub fn read_bytes(pid: Pid, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = read_into(pid, addr, &mut buf);
    buf.truncate(n.max(0) as usize);
    buf
}

/// Fills `buf` from `addr` in `pid` (process_vm_readv); the bytes read, or -1.
fn read_into(pid: Pid, addr: u64, buf: &mut [u8]) -> isize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local buffer of buf.len() bytes; the remote range is only read.
    unsafe { libc::process_vm_readv(pid.as_raw(), &local, 1, &remote, 1, 0) }
}
