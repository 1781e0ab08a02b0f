//! Turning `attach` arguments (pids or process names) into process ids.
use anyhow::bail;

use crate::failure::{FailAs as _, Failure};
use crate::procfs;

/// Does process `pid` go by `name`: its comm, its executable's file name, or argv[0]'s?
fn is_named(pid: u32, name: &str) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    // comm is cut to 15 bytes by the kernel.
    let comm_match = procfs::stat(pid).is_some_and(|s| {
        s.comm == name || (name.len() > 15 && s.comm.len() == 15 && name.starts_with(&s.comm))
    });
    comm_match
        || procfs::exe(pid)
            .is_some_and(|e| base(&e.to_string_lossy()).trim_end_matches(" (deleted)") == name)
        || procfs::cmdline(pid)
            .first()
            .is_some_and(|a| base(&a.value) == name)
}

/// Resolves each target to one or more running processes; an unknown one is bad input.
pub fn resolve(targets: &[String]) -> anyhow::Result<Vec<u32>> {
    find(targets, false).fail_as(Failure::Usage)
}

/// As [`resolve`], but a name that no process goes by yet is no error (`watch`: it is
/// followed once it starts). An unknown pid still is.
pub fn resolve_running(targets: &[String]) -> anyhow::Result<Vec<u32>> {
    find(targets, true).fail_as(Failure::Usage)
}

/// The names among `targets` (not pids), as the kernel knows a process by: the file name,
/// cut to a comm's 15 bytes.
pub fn names(targets: &[String]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| t.parse::<u32>().is_err())
        .map(|t| {
            let base = t.rsplit('/').next().unwrap_or(t);
            let mut end = base.len().min(15);
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            base[..end].to_string()
        })
        .collect()
}

fn find(targets: &[String], names_may_wait: bool) -> anyhow::Result<Vec<u32>> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for target in targets {
        if let Ok(pid) = target.parse::<u32>() {
            if pid == 0 || procfs::stat(pid).is_none() {
                bail!("no process with pid {pid}");
            }
            if pid == me {
                bail!("refusing to trace vgpu-trace itself (pid {pid})");
            }
            pids.push(pid);
            continue;
        }
        if target.is_empty() || target.contains('\0') || target.ends_with('/') {
            bail!("invalid process name {target:?}");
        }
        let found: Vec<u32> = procfs::pids()
            .into_iter()
            .filter(|&p| p != me && is_named(p, target))
            .collect();
        if found.is_empty() && !names_may_wait {
            bail!("no running process named {target:?} (give a pid, or check `pgrep -a {target}`)");
        }
        pids.extend(found);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// For each of `pids` that runs in a systemd unit or a container, a line that says which.
pub fn where_they_run(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .filter_map(|&pid| {
            let what = super::cgroup::what_runs_it(&super::cgroup::of_pid(pid)?)?;
            let comm = procfs::stat(pid).map(|s| s.comm).unwrap_or_default();
            Some(format!(
                "pid {pid} ({}) runs in {what}",
                crate::sanitize::plain(&comm)
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_targets_are_errors() {
        let err = resolve(&["4000000000".into()]).unwrap_err();
        assert_eq!(Failure::of(&err), Some(Failure::Usage));
        let err = resolve(&["no-such-process-name-xyz".into()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("no running process named"),
            "{err}"
        );
        assert!(resolve(&[std::process::id().to_string()]).is_err());
    }

    #[test]
    fn finds_a_child_by_name_and_pid() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let by_pid = resolve(&[pid.to_string()]).unwrap();
        let by_name = resolve(&["sleep".into()]).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(by_pid, vec![pid]);
        assert!(by_name.contains(&pid));
    }
}
