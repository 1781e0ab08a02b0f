//! Reading /proc: process list, parent links, argv, allowlisted environment, mapped files.
//! Used at attach time, for processes that were running before any probe existed.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use vgpu_trace_common::env_allowlisted;

use crate::text::Text;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    /// Start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

/// Parses /proc/PID/stat. The comm field may itself contain spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is the state (field 3); ppid is field 4, starttime field 22.
    Some(Stat {
        comm,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: stat_start_ticks(text.as_bytes())?,
    })
}

/// The start time (field 22, clock ticks since boot) of a /proc/PID/stat line, without
/// allocating: the hold guard, a fork child, reads it.
pub fn stat_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let field = stat[close + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
        .nth(19)?;
    if field.is_empty() {
        return None;
    }
    field.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// All process ids currently in /proc.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn nul_list(bytes: &[u8]) -> Vec<Text> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(Text::from_bytes)
        .collect()
}

pub fn cmdline(pid: u32) -> Vec<Text> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| nul_list(&b))
        .unwrap_or_default()
}

/// The allowlisted part of the process's initial environment.
pub fn environ(pid: u32) -> Vec<Text> {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|e| env_allowlisted(e))
                .map(Text::from_bytes)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid`'s fd `fd` is open on a regular file (not a pipe, terminal or socket).
pub fn fd_is_file(pid: u32, fd: u32) -> bool {
    fs::metadata(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|m| m.file_type().is_file())
}

pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Ids of `roots` and of all their living descendants.
pub fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = pids()
        .into_iter()
        .filter_map(|p| Some((p, stat(p)?.ppid)))
        .collect();
    let mut out: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
            }
        }
        i += 1;
    }
    out
}

/// A file mapped into a process, as the process sees its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub path: PathBuf,
    pub inode: u64,
}

/// File-backed mappings from the text of /proc/PID/maps, one per distinct path.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        // address perms offset dev inode path
        let mut parts = line.splitn(6, ' ');
        let (Some(_), Some(_), Some(_), Some(_), Some(inode), Some(path)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let path = path.trim_start();
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if inode == 0 || !path.starts_with('/') || out.iter().any(|m| m.path == Path::new(path)) {
            continue;
        }
        out.push(Mapping {
            path: PathBuf::from(path),
            inode,
        });
    }
    out
}

/// An executable file mapping: where it lies, and from which file offset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CodeMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: PathBuf,
}

/// The executable file-backed mappings in the text of /proc/PID/maps, in its order.
pub fn parse_code_maps(text: &str) -> Vec<CodeMapping> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(6, ' ');
            let (range, perms, offset, _dev, inode, path) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next()?.trim_start(),
            );
            let (start, end) = range.split_once('-')?;
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            (perms.as_bytes().get(2) == Some(&b'x') && inode != "0" && path.starts_with('/'))
                .then_some(())?;
            Some(CodeMapping {
                start: hex(start)?,
                end: hex(end)?,
                offset: hex(offset)?,
                path: PathBuf::from(path),
            })
        })
        .collect()
}

pub fn maps(pid: u32) -> Vec<Mapping> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|t| parse_maps(&t))
        .unwrap_or_default()
}

/// A file's identity: (device, inode), as `stat` gives it.
pub type FileId = (u64, u64);

/// The identity of the file at `path` (links followed), to tell whether two paths are one file.
pub fn file_id(path: &Path) -> Option<FileId> {
    let m = fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

/// Clock ticks per second, for /proc start times.
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

/// Current CLOCK_BOOTTIME in nanoseconds: the clock of every event timestamp.
pub fn boottime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let s =
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1 2")
                .unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.ppid, 7);
        assert_eq!(s.start_ticks, 12345);
        assert_eq!(
            stat_start_ticks(b"1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0"),
            None
        );
        assert_eq!(
            stat_start_ticks(b"1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9z"),
            None
        );
    }

    #[test]
    fn code_maps_are_the_executable_file_mappings() {
        let text = "\
5581a000-5581b000 r--p 00000000 08:01 131 /usr/bin/cat
5581b000-5581f000 r-xp 00001000 08:01 131                        /usr/bin/cat
7f00a000-7f00b000 rw-p 00000000 00:00 0 
7f10a000-7f12c000 r-xp 00028000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]
";
        let maps = parse_code_maps(text);
        assert_eq!(
            maps,
            [
                CodeMapping {
                    start: 0x5581b000,
                    end: 0x5581f000,
                    offset: 0x1000,
                    path: "/usr/bin/cat".into(),
                },
                CodeMapping {
                    start: 0x7f10a000,
                    end: 0x7f12c000,
                    offset: 0x28000,
                    path: "/usr/lib/x86_64-linux-gnu/libc.so.6 (deleted)".into(),
                },
            ]
        );
    }

    #[test]
    fn maps_keep_files_once() {
        let text = "7f00-7f01 r--p 00000000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f01-7f02 r-xp 00001000 fe:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f03-7f04 rw-p 00000000 00:00 0 \n\
                    7ffd-7ffe rw-p 00000000 00:00 0                          [stack]\n\
                    7f05-7f06 r-xp 00000000 fe:01 99 /tmp/with space.so\n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].inode, 1234);
        assert_eq!(m[1].path, PathBuf::from("/tmp/with space.so"));
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        assert!(!cmdline(me).is_empty());
        assert!(with_descendants(&[me]).contains(&me));
    }
}
