//! `ld.so.conf`: the directories ldconfig puts in the cache, with `include` globs followed
//! (relative patterns are relative to the including file) and `hwcap` lines ignored.
use std::path::{Path, PathBuf};

use super::fs::Fs;

/// Every directory the configuration at `path` names, in order, duplicates removed.
pub fn directories(fs: &dyn Fs, path: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    read(fs, path, &mut dirs, 0);
    dirs
}

fn read(fs: &dyn Fs, path: &Path, dirs: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(bytes) = fs.read(path, 1 << 20) else {
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
                    read(fs, &file, dirs, depth + 1);
                }
            }
        } else if line.starts_with("hwcap") || line.is_empty() {
            continue;
        } else {
            // Old syntax allowed "dir=TYPE" and separators other than newlines.
            for dir in line.split([' ', '\t', ',', ':']).filter(|d| !d.is_empty()) {
                let dir = dir
                    .split('=')
                    .next()
                    .unwrap_or(dir)
                    .trim_end_matches('/')
                    .to_string();
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
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
    use super::*;
    use crate::analysis::fs::MemFs;

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
    fn include_loops_end() {
        let mut fs = MemFs::default();
        fs.file("/etc/ld.so.conf", b"include ld.so.conf\n/x\n");
        assert_eq!(directories(&fs, Path::new("/etc/ld.so.conf")), ["/x"]);
    }
}
