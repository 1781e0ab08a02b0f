//! The file system as a process sees it. Paths are absolute in the process's view; a [`RootFs`]
//! maps them under a root directory (`/proc/PID/root`, a scratch tree) and follows symlinks
//! itself, so an absolute link target stays inside that root as it does for the process.
use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

pub trait Fs {
    /// What `path` itself is (not following a final symlink); `None` if it does not exist.
    fn kind(&self, path: &Path) -> Option<Kind>;
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// Up to `max` bytes of the file `path`, symlinks followed.
    fn read(&self, path: &Path, max: usize) -> io::Result<Vec<u8>>;
    /// Entry names of the directory `path`, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
}

/// At most this many symlinks are followed while resolving one path, as the kernel allows.
const MAX_LINKS: usize = 40;

/// `path` with every symlink resolved (in `fs`'s view), or the error that stopped it.
pub fn canonicalize(fs: &dyn Fs, path: &Path) -> io::Result<PathBuf> {
    // Components still to walk, last one first.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    let push = |pending: &mut Vec<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push(n.to_owned()),
                Component::ParentDir => pending.push("..".into()),
                _ => {}
            }
        }
    };
    push(&mut pending, path);
    let mut done = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&name);
        match fs.kind(&next) {
            Some(Kind::Symlink) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = fs.read_link(&next)?;
                if target.is_absolute() {
                    done = PathBuf::from("/");
                }
                push(&mut pending, &target);
            }
            Some(_) => done = next,
            None => {
                let msg = format!("{} does not exist", next.display());
                return Err(io::Error::new(io::ErrorKind::NotFound, msg));
            }
        }
    }
    Ok(done)
}

/// One step of a symlink chain: `path` and, if it is a link, what it points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub path: PathBuf,
    pub target: Option<PathBuf>,
}

/// Follows `path` link by link to the file it ends at, keeping each hop; the last hop's
/// target is `None`. Errors name the hop that broke (dangling link, loop).
pub fn symlink_chain(fs: &dyn Fs, path: &Path) -> Result<Vec<Hop>, (Vec<Hop>, String)> {
    let mut hops = Vec::new();
    let mut current = absolute(path);
    for _ in 0..MAX_LINKS {
        match fs.kind(&current) {
            None => return Err((hops, format!("{} does not exist", current.display()))),
            Some(Kind::Symlink) => {
                let target = fs
                    .read_link(&current)
                    .map_err(|e| (hops.clone(), e.to_string()))?;
                let next = if target.is_absolute() {
                    target.clone()
                } else {
                    current.parent().unwrap_or(Path::new("/")).join(&target)
                };
                hops.push(Hop {
                    path: current,
                    target: Some(target),
                });
                current = normalize(&next);
            }
            Some(_) => {
                hops.push(Hop {
                    path: current,
                    target: None,
                });
                return Ok(hops);
            }
        }
    }
    Err((hops, "too many levels of symbolic links".into()))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        Path::new("/").join(path)
    }
}

/// Removes `.` and resolves `..` lexically (as a link target's text is read).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The real file system below `root` (`/` for this machine's own view).
pub struct RootFs {
    root: PathBuf,
}

impl RootFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn host() -> Self {
        Self::new("/")
    }

    /// Where `path` (in the process's view) is on this machine, without following links.
    pub fn outside(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Opens a canonical path for reading, if it is a regular file. Paths come from traced
    /// processes: a FIFO, device or socket named `*.so` must not block or feed the tracer, and a
    /// link swapped in after `canonicalize` is refused rather than followed.
    pub fn open(&self, real: &Path) -> io::Result<std::fs::File> {
        open_regular(&self.outside(real), false)
    }
}

/// Opens `path` read-only without blocking (O_NONBLOCK: a FIFO's open would wait for a writer)
/// and keeps it only if it is a regular file. `follow`: whether a final symlink is followed
/// (needed for /proc/PID/fd/N).
pub fn open_regular(path: &Path, follow: bool) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

impl Fs for RootFs {
    fn kind(&self, path: &Path) -> Option<Kind> {
        let meta = std::fs::symlink_metadata(self.outside(path)).ok()?;
        let ft = meta.file_type();
        Some(if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        })
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(self.outside(path))
    }

    fn read(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        use std::io::Read as _;
        let real = canonicalize(self, path)?;
        let mut buf = Vec::new();
        self.open(&real)?.take(max as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let real = canonicalize(self, path)?;
        let mut names: Vec<String> = std::fs::read_dir(self.outside(&real))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// An in-memory tree for tests.
#[derive(Default)]
pub struct MemFs {
    nodes: HashMap<PathBuf, Node>,
}

enum Node {
    File(Vec<u8>),
    Dir,
    Link(PathBuf),
}

impl MemFs {
    fn parents(&mut self, path: &Path) {
        for dir in path.ancestors().skip(1) {
            self.nodes.insert(dir.to_path_buf(), Node::Dir);
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.parents(Path::new(path));
        self.nodes.insert(path.into(), Node::File(data.to_vec()));
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.parents(Path::new(path));
        self.nodes.insert(path.into(), Node::Dir);
        self
    }

    pub fn link(&mut self, path: &str, target: &str) -> &mut Self {
        self.parents(Path::new(path));
        self.nodes.insert(path.into(), Node::Link(target.into()));
        self
    }
}

impl Fs for MemFs {
    fn kind(&self, path: &Path) -> Option<Kind> {
        Some(match self.nodes.get(path)? {
            Node::File(_) => Kind::File,
            Node::Dir => Kind::Dir,
            Node::Link(_) => Kind::Symlink,
        })
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        match self.nodes.get(path) {
            Some(Node::Link(t)) => Ok(t.clone()),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a link")),
        }
    }

    fn read(&self, path: &Path, max: usize) -> io::Result<Vec<u8>> {
        match self.nodes.get(&canonicalize(self, path)?) {
            Some(Node::File(data)) => Ok(data[..data.len().min(max)].to_vec()),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file")),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let dir = canonicalize(self, path)?;
        let mut names: Vec<String> = self
            .nodes
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()) && p.as_path() != dir)
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_keep_every_hop() {
        let mut fs = MemFs::default();
        fs.file("/opt/vgpu/lib/libvgpu-cuda.so", b"x")
            .link("/opt/vgpu/lib/libcuda.so.1", "libvgpu-cuda.so")
            .link("/usr/lib/libcuda.so.1", "/opt/vgpu/lib/libcuda.so.1")
            .link("/usr/lib/libcuda.so", "../lib/./libcuda.so.1");
        let hops = symlink_chain(&fs, Path::new("/usr/lib/libcuda.so")).unwrap();
        let paths: Vec<_> = hops.iter().map(|h| h.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/usr/lib/libcuda.so",
                "/usr/lib/libcuda.so.1",
                "/opt/vgpu/lib/libcuda.so.1",
                "/opt/vgpu/lib/libvgpu-cuda.so"
            ]
        );
        assert_eq!(
            canonicalize(&fs, Path::new("/usr/lib/libcuda.so")).unwrap(),
            PathBuf::from("/opt/vgpu/lib/libvgpu-cuda.so")
        );
    }

    #[test]
    fn broken_chains_say_where() {
        let mut fs = MemFs::default();
        fs.link("/a", "/b").link("/b", "/missing");
        let (hops, why) = symlink_chain(&fs, Path::new("/a")).unwrap_err();
        assert_eq!(hops.len(), 2);
        assert!(why.contains("/missing"), "{why}");
        fs.link("/loop", "/loop");
        assert!(
            symlink_chain(&fs, Path::new("/loop"))
                .unwrap_err()
                .1
                .contains("too many")
        );
        assert!(canonicalize(&fs, Path::new("/loop")).is_err());
    }

    #[test]
    fn only_regular_files_are_opened() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let fifo = dir.join("x.so");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero.so")).unwrap();
        std::fs::write(dir.join("plain.so"), b"\x7fELF").unwrap();
        let fs = RootFs::new(dir);
        // A FIFO without a writer: refused at once, not waited on.
        let err = fs.read(Path::new("/x.so"), 16).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(fs.read(Path::new("/zero.so"), 16).is_err());
        assert_eq!(fs.read(Path::new("/plain.so"), 16).unwrap(), b"\x7fELF");
    }

    #[test]
    fn a_root_keeps_absolute_links_inside() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
        std::fs::write(dir.join("usr/lib/real.so"), b"inside").unwrap();
        std::os::unix::fs::symlink("/usr/lib/real.so", dir.join("usr/lib/link.so")).unwrap();
        let fs = RootFs::new(dir);
        assert_eq!(
            fs.read(Path::new("/usr/lib/link.so"), 100).unwrap(),
            b"inside"
        );
        assert_eq!(
            fs.read_dir(Path::new("/usr/lib")).unwrap(),
            ["link.so", "real.so"]
        );
    }
}
