//! ld.so.conf trees from any text, written into a private root directory and read as `doctor`
//! reads a process's root: the directories or nothing, never a panic or a hang. Include loops,
//! self-includes and globs that include each other end, each file is read at most once, and
//! nothing outside the root is read: every directory found is text of the input.
//!
//! Input: the text of /etc/ld.so.conf, then sections, each starting with a line
//! `@@ PATH` (a file, PATH relative to the root) or `@@ PATH -> TARGET` (a symlink).
#![no_main]
use std::cell::Cell;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use vgpu_trace::loader::fs::{Fs, Kind, RootFs};
use vgpu_trace::loader::ldconf;

/// Counts the files read through it.
struct Counting(RootFs, Cell<usize>);

impl Fs for Counting {
    fn kind(&self, path: &Path) -> Option<Kind> {
        self.0.kind(path)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.0.read_link(path)
    }
    fn read(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        self.1.set(self.1.get() + 1);
        self.0.read(path, max)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.0.read_dir(path)
    }
}

/// `name`'s plain components under `root`, or `None` if it has none or holds a NUL.
fn inside(root: &Path, name: &str) -> Option<PathBuf> {
    let parts: Vec<_> = Path::new(name)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    if parts.is_empty() || name.contains('\0') {
        return None;
    }
    Some(parts.iter().fold(root.to_path_buf(), |p, n| p.join(n)))
}

/// Creates the directories above `path`, refusing to pass through a symlink: a link the input
/// made (`etc -> /`) must not lead this process's writes out of the root.
fn parents(root: &Path, path: &Path) -> Option<()> {
    let mut dir = root.to_path_buf();
    for part in path.parent()?.strip_prefix(root).ok()?.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return None,
            Err(_) => std::fs::create_dir(&dir).ok()?,
        }
    }
    Some(())
}

/// Writes the tree the input describes under `root`; returns how many entries it holds.
fn write_tree(root: &Path, text: &str) -> usize {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut sections = text.split("\n@@ ");
    let conf = sections.next().unwrap_or("");
    std::fs::write(root.join("etc/ld.so.conf"), conf).unwrap();
    let mut links = Vec::new();
    for section in sections.take(32) {
        let (header, body) = section.split_once('\n').unwrap_or((section, ""));
        if let Some((name, target)) = header.split_once(" -> ") {
            links.push((name, target));
            continue;
        }
        let Some(path) = inside(root, header) else {
            continue;
        };
        if parents(root, &path).is_some() {
            // O_NOFOLLOW: never written through a link (links come last anyway).
            let file = std::fs::File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            if let Ok(mut file) = file {
                use std::io::Write as _;
                file.write_all(body.as_bytes()).unwrap();
            }
        }
    }
    for (name, target) in links {
        if target.contains('\0') {
            continue;
        }
        if let Some(path) = inside(root, name)
            && parents(root, &path).is_some()
        {
            let _ = std::os::unix::fs::symlink(target, &path);
        }
    }
    count(root)
}

/// Entries below `dir`, links not followed.
fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            1 + if is_dir { count(&e.path()) } else { 0 }
        })
        .sum()
}

/// This process's scratch root.
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("vgpu-fuzz-ldconf-{}", std::process::id()))
}

extern "C" fn remove_scratch_root() {
    let _ = std::fs::remove_dir_all(scratch_root());
}

fuzz_target!(|data: &[u8]| {
    static CLEANUP: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function to run at exit (libFuzzer ends by exit()).
    CLEANUP.call_once(|| unsafe {
        libc::atexit(remove_scratch_root);
    });
    let text = String::from_utf8_lossy(data);
    let root = scratch_root();
    let entries = write_tree(&root, &text);
    let fs = Counting(RootFs::new(&root), Cell::new(0));
    let dirs = ldconf::directories(&fs, Path::new("/etc/ld.so.conf"));
    // Each file (by real path) is read once: no more reads than the tree has entries, and root.
    assert!(
        fs.1.get() <= entries + 1,
        "{} reads, {entries} entries",
        fs.1.get()
    );
    for (i, dir) in dirs.iter().enumerate() {
        assert!(text.contains(dir.as_str()), "{dir:?} is not from the input");
        assert!(
            dir == "/" || !dir.is_empty() && !dir.ends_with('/'),
            "{dir:?}"
        );
        assert!(!dirs[..i].contains(dir), "{dir:?} twice");
    }
});
