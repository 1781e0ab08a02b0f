//! The VM's root filesystem: a newc cpio archive (the format the kernel unpacks into its
//! initial tmpfs), written here and compressed with gzip, which every kernel config has
//! (CONFIG_RD_GZIP) and every Debian system has installed.
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

use crate::exec;

/// Where the host's shared libraries may be: a dependency elsewhere (the lab's stand-ins, next
/// to their users) is the caller's to add.
const SYSTEM_LIB_DIRS: [&str; 4] = ["/lib", "/lib64", "/usr/lib", "/usr/lib64"];

enum Entry {
    Dir,
    /// A host file, its contents and permission bits copied.
    File(PathBuf),
    Bytes(Vec<u8>, u32),
    Symlink(PathBuf),
    CharDev(u32, u32),
}

/// Paths in the image (absolute) and what they hold.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Initramfs {
    /// busybox (static from busybox-static, or dynamic with its libraries), `init` as /init
    /// and /dev/console, which the kernel opens for /init's stdio before anything is mounted.
    pub fn new(init: &str) -> anyhow::Result<Self> {
        crate::testbed::install_missing(&[("busybox", "busybox-static")])?;
        let busybox = which("busybox")?;
        let mut image = Self::default();
        image.dynamic(&busybox, Path::new("/bin/busybox"))?;
        image.bytes("/init", init.as_bytes().to_vec(), 0o755);
        image
            .entries
            .insert(PathBuf::from("/dev/console"), Entry::CharDev(5, 1));
        Ok(image)
    }

    /// A host file at `image`.
    pub fn file(&mut self, host: &Path, image: impl Into<PathBuf>) -> anyhow::Result<()> {
        ensure!(
            host.is_file(),
            "{} is not a file to put in the initramfs",
            host.display()
        );
        self.entries
            .insert(image.into(), Entry::File(host.to_path_buf()));
        Ok(())
    }

    pub fn bytes(&mut self, image: impl Into<PathBuf>, contents: Vec<u8>, mode: u32) {
        self.entries
            .insert(image.into(), Entry::Bytes(contents, mode));
    }

    /// The files under host dir `host` (symlinks followed) at `image`, recursively.
    pub fn tree(&mut self, host: &Path, image: &Path) -> anyhow::Result<()> {
        self.entries.insert(image.to_path_buf(), Entry::Dir);
        for entry in
            std::fs::read_dir(host).with_context(|| format!("reading {}", host.display()))?
        {
            let entry = entry?;
            let (path, at) = (entry.path(), image.join(entry.file_name()));
            if path.is_dir() {
                self.tree(&path, &at)?;
            } else {
                self.file(&path, at)?;
            }
        }
        Ok(())
    }

    /// A program or library at `image`, with the host's shared libraries it needs (as `ldd`
    /// resolves them) at their host paths, so glibc programs run unchanged.
    pub fn dynamic(&mut self, host: &Path, image: &Path) -> anyhow::Result<()> {
        self.file(host, image)?;
        self.system_libraries_of(host)
    }

    /// Every ELF file under `image_dir` (added with `tree`) gets its system libraries.
    pub fn libraries_of_tree(&mut self, image_dir: &Path) -> anyhow::Result<()> {
        let elves: Vec<PathBuf> = self
            .entries
            .range(image_dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(image_dir))
            .filter_map(|(_, e)| match e {
                Entry::File(host) if is_elf(host) => Some(host.clone()),
                _ => None,
            })
            .collect();
        for host in elves {
            self.system_libraries_of(&host)?;
        }
        Ok(())
    }

    fn system_libraries_of(&mut self, host: &Path) -> anyhow::Result<()> {
        for lib in ldd(host)? {
            if SYSTEM_LIB_DIRS.iter().any(|d| lib.starts_with(d)) {
                self.host_path(&lib)?;
            }
        }
        Ok(())
    }

    /// A host file at the same path, with every symlink on the way (`/lib` -> `usr/lib` on a
    /// merged-/usr system, `/lib64/ld-linux-x86-64.so.2` -> ...) recreated as a symlink, so
    /// the names programs were linked against (PT_INTERP, DT_NEEDED) resolve as on the host.
    pub fn host_path(&mut self, path: &Path) -> anyhow::Result<()> {
        self.host_path_within(path, 0)
    }

    fn host_path_within(&mut self, path: &Path, links: u32) -> anyhow::Result<()> {
        ensure!(links < 40, "too many symlinks resolving {}", path.display());
        ensure!(path.is_absolute(), "{} is not absolute", path.display());
        let names: Vec<&std::ffi::OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        let mut walked = PathBuf::from("/");
        for (i, name) in names.iter().enumerate() {
            walked.push(name);
            let meta = std::fs::symlink_metadata(&walked)
                .with_context(|| format!("reading {}", walked.display()))?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&walked)?;
                let parent = walked.parent().unwrap_or(Path::new("/"));
                // The part walked so far has no symlinks, so `..` in a relative target can
                // be resolved by name.
                let mut rest = normalize(&parent.join(&target));
                rest.extend(&names[i + 1..]);
                self.entries.insert(walked, Entry::Symlink(target));
                return self.host_path_within(&rest, links + 1);
            }
        }
        self.file(&walked, walked.clone())
    }

    /// What `write` would write, as text: unchanged text means an unchanged archive. Host
    /// files count by content, as a kit copied afresh is new by its modification times.
    pub fn signature(&self) -> anyhow::Result<String> {
        let mut text = String::new();
        for (path, entry) in &self.entries {
            let what = match entry {
                Entry::Dir => "dir".to_string(),
                Entry::File(host) => {
                    let mode = std::fs::metadata(host)
                        .with_context(|| format!("reading {}", host.display()))?
                        .mode();
                    let data = std::fs::read(host)
                        .with_context(|| format!("reading {}", host.display()))?;
                    format!("{:016x} {} {mode:o}", hash(&data), data.len())
                }
                Entry::Bytes(b, mode) => format!("{:016x} {} {mode:o}", hash(b), b.len()),
                Entry::Symlink(t) => format!("-> {}", t.display()),
                Entry::CharDev(major, minor) => format!("c {major} {minor}"),
            };
            text += &format!("{} {what}\n", path.display());
        }
        Ok(text)
    }

    /// Writes the archive, gzip'd, to `out` (whole or not at all); returns its size.
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let raw = out.with_extension("cpio-partial");
        let file =
            std::fs::File::create(&raw).with_context(|| format!("creating {}", raw.display()))?;
        let mut buffered = std::io::BufWriter::new(file);
        self.write_cpio(&mut buffered)
            .and_then(|()| Ok(buffered.flush()?))
            .with_context(|| format!("writing {}", raw.display()))?;
        // gzip -c, not in place: gzip would add `.gz` to a name of its own making.
        let partial = out.with_extension("gz-partial");
        let gz = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        exec(
            Command::new("gzip")
                .args(["-c", "-n", "-6"])
                .arg(&raw)
                .stdout(gz),
        )?;
        std::fs::remove_file(&raw)?;
        std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))?;
        Ok(std::fs::metadata(out)?.len())
    }

    fn write_cpio(&self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        // Every parent dir of an entry, unless the caller put something else there.
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.entries.keys() {
            for parent in path.ancestors().skip(1) {
                if parent == Path::new("/") {
                    break;
                }
                match self.entries.get(parent) {
                    None | Some(Entry::Dir) => {
                        dirs.insert(parent.to_path_buf());
                    }
                    Some(_) => bail!(
                        "{} is in the initramfs, and {} would need it to be a dir",
                        parent.display(),
                        path.display()
                    ),
                }
            }
        }
        let mut w = Cpio { out, ino: 0 };
        // Parents sort before their children, as unpacking needs.
        for dir in &dirs {
            w.entry(dir, 0o040_755, 0, &[])?;
        }
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir => {}
                Entry::File(host) => {
                    let mode = std::fs::metadata(host)?.permissions().mode() & 0o7777;
                    let data = std::fs::read(host)
                        .with_context(|| format!("reading {}", host.display()))?;
                    w.entry(path, 0o100_000 | mode, 0, &data)?;
                }
                Entry::Bytes(data, mode) => w.entry(path, 0o100_000 | mode, 0, data)?,
                Entry::Symlink(target) => {
                    w.entry(path, 0o120_777, 0, target.as_os_str().as_encoded_bytes())?
                }
                Entry::CharDev(major, minor) => {
                    w.entry(path, 0o020_600, (*major << 8) | *minor, &[])?
                }
            }
        }
        w.trailer()
    }
}

/// The newc writer (see the kernel's Documentation/driver-api/early-userspace/buffer-format).
struct Cpio<'a, W> {
    out: &'a mut W,
    ino: u32,
}

impl<W: std::io::Write> Cpio<'_, W> {
    /// `rdev` as (major << 8) | minor.
    fn entry(&mut self, path: &Path, mode: u32, rdev: u32, data: &[u8]) -> anyhow::Result<()> {
        let name = path
            .strip_prefix("/")
            .unwrap_or(path)
            .as_os_str()
            .as_encoded_bytes();
        self.ino += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        self.header(name, mode, nlink, data.len(), rdev)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn trailer(&mut self) -> anyhow::Result<()> {
        self.header(b"TRAILER!!!", 0, 1, 0, 0)
    }

    fn header(
        &mut self,
        name: &[u8],
        mode: u32,
        nlink: u32,
        size: usize,
        rdev: u32,
    ) -> anyhow::Result<()> {
        let size = u32::try_from(size).context("a file of 4 GiB or more in the initramfs")?;
        // Owned by root, mtime 0: the same inputs make the same archive.
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev >> 8,
            rdev & 0xff,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = String::from("070701");
        for f in fields {
            header += &format!("{f:08x}");
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name)?;
        self.out.write_all(&[0])?;
        // Header (110 bytes) and name, then data, each padded to 4 bytes.
        self.pad(110 + name.len() + 1)
    }

    fn pad(&mut self, len: usize) -> anyhow::Result<()> {
        self.out.write_all(&[0; 3][..(4 - len % 4) % 4])?;
        Ok(())
    }
}

/// The absolute paths of the shared libraries `ldd` says `path` loads, the dynamic loader
/// included; none for a static program.
fn ldd(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(path)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        if all.contains("not a dynamic executable") || all.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", path.display(), all.trim());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`, `linux-vdso.so.1 (0x...)`.
        // `=> not found`: one of the lab's stand-ins, found at run time through
        // LD_LIBRARY_PATH, not a system library.
        let line = line.trim();
        let path = line.split_once("=> ").map_or(line, |(_, p)| p);
        let path = path.split(" (").next().unwrap_or(path);
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on PATH"))
}

/// `a/b/../c` -> `a/c`, by name only.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// SipHash from std, which is optimised even in xtask's debug build (80 MB in well under a
/// second). Not stable across Rust releases: a new toolchain only rewrites the archive once.
fn hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entry_layout() {
        let mut image = Initramfs::default();
        image.bytes("/etc/x", b"hello".to_vec(), 0o644);
        let mut data = Vec::new();
        image.write_cpio(&mut data).expect("write");
        // /etc (dir), /etc/x, trailer: each header starts on a 4-byte boundary.
        let text = String::from_utf8_lossy(&data);
        assert!(text.starts_with("070701"));
        assert_eq!(text.matches("070701").count(), 3);
        let x = text.find("etc/x\0").expect("name");
        assert_eq!((x - 110) % 4, 0);
        // Header and name (110 + 6 bytes) padded to 4: the data follows at once.
        assert_eq!(&data[x + 6..x + 11], b"hello");
        assert!(text.contains("TRAILER!!!\0"));
        assert_eq!(data.len() % 4, 0);
    }

    #[test]
    fn host_symlinks_are_kept() {
        let mut image = Initramfs::default();
        let ld = Path::new("/lib64/ld-linux-x86-64.so.2");
        image.host_path(ld).expect("the host's dynamic loader");
        let linked = image
            .entries
            .iter()
            .any(|(p, e)| matches!(e, Entry::Symlink(_)) && ld.starts_with(p));
        assert!(linked, "{:?}", image.signature());
        assert!(
            image
                .entries
                .values()
                .any(|e| matches!(e, Entry::File(f) if f.ends_with("ld-linux-x86-64.so.2")))
        );
    }

    #[test]
    fn normalize_parent_dirs() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/./ld.so")),
            Path::new("/usr/lib/x86_64-linux-gnu/ld.so")
        );
    }
}
