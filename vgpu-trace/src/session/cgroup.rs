//! `attach --unit`/`--cgroup`: following a service by its cgroup (v2) rather than a pid, so
//! that a restart (a new main pid) is followed too. The kernel side follows every process that
//! execs in the cgroup or below it; the processes already there are followed at start.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::failure::{FailAs as _, Failure};

/// What `attach` was asked to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupSpec {
    /// A systemd unit (`ollama.service`), through its `ControlGroup`.
    Unit(String),
    /// A cgroup: its path in the v2 hierarchy (`/system.slice/ollama.service`) or on disk.
    Path(String),
}

/// A cgroup, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Its directory in the mounted v2 hierarchy.
    pub dir: PathBuf,
    /// Its path in the hierarchy, as /proc/PID/cgroup shows it.
    pub path: String,
    /// Its id (the directory's inode), as the kernel's `bpf_get_current_cgroup_id` gives it.
    pub id: u64,
    /// Its depth below the root.
    pub level: u32,
}

impl CgroupSpec {
    /// The header's words for it.
    pub fn describe(&self) -> Vec<String> {
        match self {
            Self::Unit(u) => vec!["--unit".into(), u.clone()],
            Self::Path(p) => vec!["--cgroup".into(), p.clone()],
        }
    }

    /// Finds the cgroup; a unit or path that is not there is bad input.
    pub fn resolve(&self) -> anyhow::Result<Cgroup> {
        let mount = v2_mount()
            .context("no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)")
            .fail_as(Failure::CannotTrace)?;
        let path = match self {
            Self::Unit(unit) => unit_cgroup(unit).fail_as(Failure::Usage)?,
            Self::Path(p) => match Path::new(p).strip_prefix(&mount) {
                Ok(rel) => format!("/{}", rel.display()),
                Err(_) => p.clone(),
            },
        };
        let rel = path.trim_matches('/');
        let dir = mount.join(rel);
        let meta = std::fs::metadata(&dir)
            .with_context(|| format!("no cgroup {path:?} (looked for {})", dir.display()))
            .fail_as(Failure::Usage)?;
        if !meta.is_dir() {
            return Err(anyhow::anyhow!("{} is not a cgroup", dir.display()))
                .fail_as(Failure::Usage);
        }
        let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
        if level == 0 {
            return Err(anyhow::anyhow!(
                "the root cgroup holds every process: use `attach --all`"
            ))
            .fail_as(Failure::Usage);
        }
        Ok(Cgroup {
            id: std::os::unix::fs::MetadataExt::ino(&meta),
            dir,
            path: format!("/{rel}"),
            level,
        })
    }
}

impl Cgroup {
    /// The processes in it and below it now.
    pub fn members(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        while let Some(dir) = dirs.pop() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                dirs.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// Where the v2 hierarchy is mounted (the unified one, in a hybrid set-up).
fn v2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    v2_mount_in(&text)
}

/// The first cgroup2 mount point in the text of /proc/self/mountinfo.
pub fn v2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(unescape))?
    })
}

/// mountinfo escapes spaces and the like as `\ooo`.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// A unit's `ControlGroup`, from systemd.
fn unit_cgroup(unit: &str) -> anyhow::Result<String> {
    if unit.is_empty() || unit.starts_with('-') || unit.contains(['\0', '/']) {
        bail!("invalid unit name {unit:?}");
    }
    if !Path::new("/run/systemd/system").is_dir() {
        bail!(
            "systemd is not running here, so there is no unit {unit:?}: give its cgroup with --cgroup PATH"
        );
    }
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=ControlGroup", "--value", "--", unit])
        .output()
        .context("running systemctl")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        bail!("unit {unit:?} has no cgroup (is it running? `systemctl status {unit}`)");
    }
    Ok(path)
}

/// The v2 cgroup of process `pid`, if it is there to ask.
pub fn of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    of_process(&text).map(str::to_string)
}

/// The v2 cgroup of a process, from the text of /proc/PID/cgroup (`0::/system.slice/x`).
pub fn of_process(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The short id (12 hex digits, as runtimes print it) of the container whose scope is the
/// leaf of a cgroup path: `libpod-ID.scope` (podman with systemd), `libpod-ID` (podman with
/// cgroupfs), `docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`.
pub fn container_id(path: &str) -> Option<String> {
    let leaf = path.rsplit('/').next()?;
    let id = ["libpod-", "docker-", "cri-containerd-", "crio-"]
        .iter()
        .find_map(|p| leaf.strip_prefix(p))?;
    let id = id.strip_suffix(".scope").unwrap_or(id);
    (id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.chars().take(12).collect())
}

/// What a process's cgroup path says it runs in: a systemd unit or a container.
pub fn what_runs_it(path: &str) -> Option<String> {
    if let Some(short) = container_id(path) {
        return Some(format!("container {short}"));
    }
    let leaf = path.rsplit('/').next()?;
    leaf.ends_with(".service")
        .then(|| format!("unit {leaf} (--unit {leaf} follows it across restarts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_mount_is_found_in_a_hybrid_setup() {
        let mountinfo = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
";
        assert_eq!(
            v2_mount_in(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let spaced = "26 25 0:23 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_mount_in(spaced), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(v2_mount_in("25 30 0:22 / /x rw - tmpfs tmpfs rw\n"), None);
    }

    #[test]
    fn units_and_containers_are_named_from_the_cgroup_path() {
        let text = "12:pids:/x\n0::/system.slice/ollama.service\n";
        let path = of_process(text).unwrap();
        assert_eq!(path, "/system.slice/ollama.service");
        assert!(
            what_runs_it(path)
                .unwrap()
                .starts_with("unit ollama.service")
        );
        assert_eq!(
            what_runs_it("/machine.slice/libpod-0123456789abcdef0123.scope").as_deref(),
            Some("container 0123456789ab")
        );
        assert_eq!(
            what_runs_it("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(
            container_id(
                "/libpod_parent/libpod-27d0df4ea1cdee69f0d996b06948fd3c73330cbed1f8880b5dea54ec3a2e8634"
            )
            .as_deref(),
            Some("27d0df4ea1cd")
        );
        assert_eq!(container_id("/libpod_parent/conmon"), None);
    }

    #[test]
    fn bad_units_are_refused_before_anything_runs() {
        for unit in ["", "-x", "a/b"] {
            assert!(unit_cgroup(unit).is_err(), "{unit:?}");
        }
    }
}
