//! Go's `filepath.Glob` for the patterns Ollama's era-A search uses (`*` and `?` only), with
//! results in lexical order per directory.
use std::path::{Path, PathBuf};

pub fn glob(pattern: &str) -> Vec<PathBuf> {
    let absolute = pattern.starts_with('/');
    let mut paths = vec![PathBuf::from(if absolute { "/" } else { "." })];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for dir in &paths {
            if !part.contains(['*', '?']) {
                let candidate = dir.join(part);
                if candidate.symlink_metadata().is_ok() {
                    next.push(candidate);
                }
                continue;
            }
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| matches(part, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        paths = next;
    }
    if !absolute {
        paths = paths
            .into_iter()
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect();
    }
    paths
}

/// Shell-style match of one path component: `*` any run, `?` one character.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("libcuda.so*", "libcuda.so.1"));
        assert!(matches("libcuda.so*", "libcuda.so"));
        assert!(!matches("libcuda.so*", "libcudart.so.12"));
        assert!(matches("cuda_v?", "cuda_v9"));
        assert!(matches("*-linux-gnu", "x86_64-linux-gnu"));
    }

    #[test]
    fn globs_a_tree() {
        let dir = std::env::temp_dir().join(format!("vgpu-lab-glob-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(dir.join("usr/lib/x86_64-linux-gnu/libcuda.so.1"), b"").unwrap();
        std::fs::write(dir.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"").unwrap();
        let found = glob(&format!(
            "{}/usr/lib/*-linux-gnu/libcuda.so*",
            dir.display()
        ));
        assert_eq!(
            found,
            vec![dir.join("usr/lib/x86_64-linux-gnu/libcuda.so.1")]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
