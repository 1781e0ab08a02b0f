//! Whether an earlier session's probes are gone: none of the tracer's BPF programs is left (a
//! uprobe keeps its program alive), and no session or release holds the session lock file that
//! tracers before uprobe_multi links took while they were releasing perf-event uprobes.
use std::time::{Duration, Instant};

/// How the tracer's programs' names begin (the kernel keeps 15 bytes of a name).
const OURS: [&str; 5] = ["sched_process_", "sys_enter", "sys_exit", "dl_", "api_"];

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info`: `name[16]` follows type, id, tag[8], two lengths, three u64s, uid,
/// nr_map_ids and map_ids.
const PROG_INFO_NAME_AT: usize = 64;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> libc::c_long {
    // SAFETY: `attr` is a zeroed buffer at least as large as the union member `cmd` uses.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) }
}

fn prog_name(id: u32) -> Option<String> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr);
    if fd < 0 {
        return None;
    }
    let mut info = [0u8; 256];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    let ok = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0;
    // SAFETY: closing the descriptor the kernel just gave us.
    unsafe { libc::close(fd as i32) };
    let name = &info[PROG_INFO_NAME_AT..PROG_INFO_NAME_AT + 16];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    ok.then(|| String::from_utf8_lossy(&name[..end]).into_owned())
}

/// How many of the tracer's programs are loaded now.
pub fn loaded() -> usize {
    let mut count = 0;
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(BPF_PROG_GET_NEXT_ID, &mut attr) != 0 {
            return count;
        }
        id = u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes"));
        if prog_name(id).is_some_and(|n| OURS.iter().any(|o| n.starts_with(o))) {
            count += 1;
        }
    }
}

/// The lock file sessions of earlier versions held while tracing or releasing.
const LOCK_FILE: &str = "/run/vgpu-trace.lock";

/// Whether nobody holds the session lock (or there is none).
fn lock_free() -> bool {
    let Ok(file) = std::fs::File::open(LOCK_FILE) else {
        return true;
    };
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor this File owns; closing it drops the lock at once.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Waits until none of the tracer's programs is loaded and no release is under way; returns
/// how long that took, or `None` when something was still there after `limit`.
pub fn wait_released(limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while loaded() > 0 || !lock_free() {
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Some(start.elapsed())
}
