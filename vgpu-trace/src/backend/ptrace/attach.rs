//! `attach` under ptrace: seizing running processes thread by thread, and arming what they
//! have mapped already.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use anyhow::bail;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::unistd::Pid;

use super::probes::Probes;
use crate::procfs::{self, CodeMapping};

/// What was seized: the processes, and every thread with its process.
pub struct Seized {
    pub pids: Vec<u32>,
    pub tids: HashMap<Pid, u32>,
}

/// Seizes every thread of `roots` and of their descendants, scanning again until a scan finds
/// nothing new (threads and children started meanwhile), then interrupts each: its first stop
/// is where the engine takes over. Nothing is patched yet, so a failure needs no undoing: the
/// tracer's exit lets go of what it seized.
pub fn seize(roots: &[u32]) -> anyhow::Result<Seized> {
    let options = Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC;
    // The session and the engine may descend from a root (attach to one's own shell).
    let ours = [std::process::id(), nix::unistd::getppid().as_raw() as u32];
    let mut seized = Seized {
        pids: Vec::new(),
        tids: HashMap::new(),
    };
    loop {
        let mut found = false;
        for pid in procfs::with_descendants(roots) {
            if ours.contains(&pid) {
                continue;
            }
            for tid in threads(pid) {
                if seized.tids.contains_key(&tid) {
                    continue;
                }
                match ptrace::seize(tid, options) {
                    Ok(()) => {}
                    // Gone meanwhile.
                    Err(Errno::ESRCH) => continue,
                    Err(e) => {
                        let comm = procfs::stat(pid).map(|s| s.comm).unwrap_or_default();
                        bail!(
                            "cannot attach to {comm} (pid {pid}): {e}; another tracer (gdb, \
                             strace) may hold it, or ptrace is restricted \
                             (kernel.yama.ptrace_scope)"
                        );
                    }
                }
                found = true;
                seized.tids.insert(tid, pid);
                if !seized.pids.contains(&pid) {
                    seized.pids.push(pid);
                }
            }
        }
        if !found {
            break;
        }
    }
    if seized.tids.is_empty() {
        bail!("the processes to attach to have exited");
    }
    for &tid in seized.tids.keys() {
        let _ = ptrace::interrupt(tid);
    }
    Ok(seized)
}

fn threads(pid: u32) -> Vec<Pid> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// Arms what `tgid` has mapped, through its stopped thread `tid`: at attach, at exec, and
/// after ld.so changed its list. `armed` holds the code mappings armed before; only new ones
/// are looked at, and it is left holding those mapped now (a library unmapped and mapped
/// again at the same place, between two calls, counts as new). Returns the functions that
/// could not be probed.
pub fn arm_mapped(
    probes: &mut Probes,
    armed: &mut HashSet<CodeMapping>,
    tgid: u32,
    tid: Pid,
) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default();
    let now: HashSet<CodeMapping> = procfs::parse_code_maps(&text).into_iter().collect();
    let new: Vec<&CodeMapping> = now.iter().filter(|m| !armed.contains(*m)).collect();
    let mut refused = Vec::new();
    for m in new {
        // The mapping itself (the file even if replaced on disk); without the privilege it
        // needs, the path as the process sees it.
        let mapped = PathBuf::from(format!("/proc/{tgid}/map_files/{:x}-{:x}", m.start, m.end));
        let rooted = PathBuf::from(format!("/proc/{tgid}/root"))
            .join(m.path.strip_prefix("/").unwrap_or(&m.path));
        let Some((file, id)) = [mapped, rooted]
            .into_iter()
            .find_map(|p| procfs::file_id(&p).map(|id| (p, id)))
        else {
            continue;
        };
        refused.extend(probes.arm(
            (tgid, tid),
            (&file, id),
            (m.start, m.end - m.start, m.offset),
        ));
    }
    *armed = now;
    refused
}
