//! `ld.so.conf`: the directories ldconfig puts in the cache, with `include` globs followed
//! (relative patterns are relative to the including file) and `hwcap` lines ignored.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::fs::{self, Fs};

/// Deepest chain of includes followed (each file is read once anyway; this bounds recursion).
const MAX_DEPTH: usize = 8;

/// Every directory the configuration at `path` names, in order, duplicates removed.
pub fn directories(fs: &dyn Fs, path: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    read(fs, path, &mut dirs, &mut HashSet::new(), 0);
    // First mentions kept, in one pass: a hostile file may name a great many.
    let mut kept = HashSet::new();
    dirs.retain(|d| kept.insert(d.clone()));
    dirs
}

/// Reads one file and what it includes, adding the directories named. `seen`: the files read so
/// far, by canonical path: a second read adds no directory (they are kept once), and skipping it
/// keeps include loops and globs that include each other from costing a read per path through
/// them.
fn read(
    fs: &dyn Fs,
    path: &Path,
    dirs: &mut Vec<String>,
    seen: &mut HashSet<PathBuf>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(real) = fs::canonicalize(fs, path) else {
        return;
    };
    if !seen.insert(real.clone()) {
        return;
    }
    let Ok(bytes) = fs.read(&real, 1 << 20) else {
        return;
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    for line in String::from_utf8_lossy(&bytes).lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line
            .strip_prefix("include")
            .filter(|r| r.starts_with(char::is_whitespace))
        {
            for pattern in pattern.split_whitespace() {
                let pattern = if pattern.starts_with('/') {
                    PathBuf::from(pattern)
                } else {
                    base.join(pattern)
                };
                for file in glob_last(fs, &pattern) {
                    read(fs, &file, dirs, seen, depth + 1);
                }
            }
        } else if line.starts_with("hwcap") || line.is_empty() {
            continue;
        } else {
            // Old syntax allowed "dir=TYPE" and separators other than newlines.
            for dir in line.split([' ', '\t', ',', ':']) {
                let dir = dir.split('=').next().unwrap_or(dir);
                // Trailing slashes go, as ldconfig drops them, but "/" stays the root.
                let dir = match dir.trim_end_matches('/') {
                    "" if dir.is_empty() => continue,
                    "" => "/",
                    trimmed => trimmed,
                };
                dirs.push(dir.to_string());
            }
        }
    }
}

/// Files matching `pattern`, whose last component may hold `*`, `?` and `[...]`; sorted.
fn glob_last(fs: &dyn Fs, pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    if !name.contains(['*', '?', '[']) {
        return vec![pattern.to_path_buf()];
    }
    let Ok(entries) = fs.read_dir(dir) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|e| fnmatch(&name, e))
        .map(|e| dir.join(e))
        .collect()
}

pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(pattern),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: two valid C strings; fnmatch only reads them.
    unsafe { libc::fnmatch(p.as_ptr(), n.as_ptr(), 0) == 0 }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::loader::fs::{Kind, MemFs};

    /// Counts the files read through it.
    struct Counting<'a>(&'a MemFs, Cell<usize>);

    impl Fs for Counting<'_> {
        fn kind(&self, path: &Path) -> Option<Kind> {
            self.0.kind(path)
        }
        fn read_link(&self, path: &Path) -> std::io::Result<PathBuf> {
            self.0.read_link(path)
        }
        fn read(&self, path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
            self.1.set(self.1.get() + 1);
            self.0.read(path, max)
        }
        fn read_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
            self.0.read_dir(path)
        }
    }

    #[test]
    fn globs_including_each_other_read_each_file_once() {
        // Ten files that each include all ten: followed blindly to depth 8, over 10^8 reads.
        let mut fs = MemFs::default();
        fs.file("/etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n");
        for i in 0..10 {
            let text = format!("/lib{i}\ninclude *.conf\n");
            fs.file(&format!("/etc/ld.so.conf.d/{i}.conf"), text.as_bytes());
        }
        let counting = Counting(&fs, Cell::new(0));
        let dirs = directories(&counting, Path::new("/etc/ld.so.conf"));
        let want: Vec<String> = (0..10).map(|i| format!("/lib{i}")).collect();
        assert_eq!(dirs, want);
        assert_eq!(counting.1.get(), 11);
    }

    #[test]
    fn a_file_reached_through_a_link_or_dots_is_read_once() {
        let mut fs = MemFs::default();
        fs.file(
            "/etc/ld.so.conf",
            b"include x/../ld.so.conf link.conf\n/x\n",
        )
        .dir("/etc/x")
        .link("/etc/link.conf", "ld.so.conf");
        let counting = Counting(&fs, Cell::new(0));
        assert_eq!(directories(&counting, Path::new("/etc/ld.so.conf")), ["/x"]);
        assert_eq!(counting.1.get(), 1);
    }

    #[test]
    fn includes_are_followed_in_order() {
        let mut fs = MemFs::default();
        fs.file(
            "/etc/ld.so.conf",
            b"include /etc/ld.so.conf.d/*.conf\n/opt/extra/ # trailing comment\n",
        )
        .file("/etc/ld.so.conf.d/b.conf", b"/usr/local/vgpu/lib\n")
        .file(
            "/etc/ld.so.conf.d/a.conf",
            b"# libc\n/usr/local/lib\nhwcap 0 nosegneg\n",
        )
        .file("/etc/ld.so.conf.d/skip.txt", b"/not/me\n");
        assert_eq!(
            directories(&fs, Path::new("/etc/ld.so.conf")),
            ["/usr/local/lib", "/usr/local/vgpu/lib", "/opt/extra"]
        );
        assert!(directories(&fs, Path::new("/etc/missing.conf")).is_empty());
    }

    #[test]
    fn the_root_dir_stays_and_empty_entries_go() {
        let mut fs = MemFs::default();
        fs.file("/etc/ld.so.conf", b"/\n//\n=libc6\n/lib//=libc5 ,:/lib\n");
        assert_eq!(
            directories(&fs, Path::new("/etc/ld.so.conf")),
            ["/", "/lib"]
        );
    }

    #[test]
    fn include_loops_end() {
        let mut fs = MemFs::default();
        fs.file("/etc/ld.so.conf", b"include ld.so.conf\n/x\n");
        assert_eq!(directories(&fs, Path::new("/etc/ld.so.conf")), ["/x"]);
    }
}
