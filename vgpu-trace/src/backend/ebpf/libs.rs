//! Which files to put the `dl*` uprobes on. A uprobe binds to one file's inode, so every
//! distinct libc (host, container image, private copy) that a traced process maps needs its own.
use std::path::{Path, PathBuf};

use crate::procfs;

/// Where the host's C library usually lives; the first that exists is probed.
const HOST_LIBC: [&str; 6] = [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/aarch64-linux-gnu/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
    "/usr/lib/libc.so.6",
];

/// Does this file name look like a library that exports the `dl*` API?
/// glibc ≥ 2.34 has it in libc.so.6, older glibc in libdl.so.2; musl in its libc / loader.
pub fn provides_dl(file_name: &str) -> bool {
    file_name.starts_with("libc.so")
        || file_name.starts_with("libc-")
        || file_name.starts_with("libdl.so")
        || file_name.starts_with("libdl-")
        || file_name.starts_with("ld-musl-")
}

/// musl's C library, which is also its loader: the kernel maps it at exec, so no `openat` of a
/// musl program ever shows it, and it is probed from the start wherever it is installed.
const HOST_MUSL: [&str; 2] = [
    "/lib/ld-musl-x86_64.so.1",
    "/usr/lib/x86_64-linux-musl/libc.so",
];

/// The host libc (and musl's, if installed) plus every dl-providing file mapped by `pids`, one
/// path per distinct file. Paths of other processes are reached through /proc/PID/root so
/// containers work.
pub fn dl_libraries(pids: &[u32]) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = HOST_LIBC
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .take(1)
        .collect();
    candidates.extend(HOST_MUSL.iter().map(PathBuf::from).filter(|p| p.exists()));
    for &pid in pids {
        for m in procfs::maps(pid) {
            let name = m.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if provides_dl(name) {
                let rel = m.path.strip_prefix("/").unwrap_or(&m.path);
                candidates.push(Path::new(&format!("/proc/{pid}/root")).join(rel));
            }
        }
    }
    let mut seen = Vec::new();
    candidates.retain(|p| match procfs::file_id(p) {
        Some(id) if !seen.contains(&id) => {
            seen.push(id);
            true
        }
        _ => false,
    });
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_dl_providers() {
        assert!(provides_dl("libc.so.6"));
        assert!(provides_dl("libdl.so.2"));
        assert!(provides_dl("libc-2.31.so"));
        assert!(provides_dl("ld-musl-x86_64.so.1"));
        assert!(!provides_dl("libcuda.so.1"));
        assert!(!provides_dl("libcrypt.so.1"));
    }

    #[test]
    fn own_libc_is_found_once() {
        let libs = dl_libraries(&[std::process::id(), std::process::id()]);
        assert!(!libs.is_empty(), "no libc found on this host");
        let ids: Vec<_> = libs.iter().filter_map(|p| procfs::file_id(p)).collect();
        let mut dedup = ids.clone();
        dedup.dedup();
        assert_eq!(ids.len(), dedup.len());
    }
}
