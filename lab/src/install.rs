//! Installing the reference shims into a directory tree, the way shim authors (and the seed team)
//! do: the real file under its own name, plus `libcuda.so.1` / `libnvidia-ml.so.1` links.
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// File names a shim author ships; cargo builds them as libvgpu_cuda.so / libvgpu_nvml.so.
pub const CUDA_FILE: &str = "libvgpu-cuda.so";
pub const NVML_FILE: &str = "libvgpu-nvml.so";

/// The library directories the seed team linked the shims into, one guess at a time.
pub const SEED_DIRS: [&str; 6] = [
    "usr/lib/x86_64-linux-gnu",
    "usr/lib64",
    "usr/local/lib",
    "usr/local/cuda/lib64",
    "usr/local/nvidia/lib64",
    "lib/x86_64-linux-gnu",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `PREFIX/lib/` holds the files and their soname links (what a package ships).
    Lib,
    /// Files in `PREFIX/opt/vgpu/lib`, absolute soname links in each of [`SEED_DIRS`].
    Seed,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lib" => Ok(Layout::Lib),
            "seed" => Ok(Layout::Seed),
            _ => Err(format!("unknown layout {s:?}: expected lib or seed")),
        }
    }
}

/// What got created, for the caller to print.
#[derive(Debug, Default)]
pub struct Installed {
    pub files: Vec<PathBuf>,
    pub links: Vec<(PathBuf, PathBuf)>,
}

impl Installed {
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            out += &format!("file {}\n", f.display());
        }
        for (link, target) in &self.links {
            out += &format!("link {} -> {}\n", link.display(), target.display());
        }
        out
    }
}

/// Replaces whatever is at `link` with a symlink to `target`.
pub fn force_symlink(target: &Path, link: &Path) -> io::Result<()> {
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    symlink(target, link)
}

/// Copies `src` to `dir/name` (mode kept) and returns the new path.
pub fn copy_into(src: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let dest = dir.join(name);
    let _ = std::fs::remove_file(&dest);
    std::fs::copy(src, &dest).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{} -> {}: {e}", src.display(), dest.display()),
        )
    })?;
    Ok(dest)
}

pub fn install_shims(
    cuda: &Path,
    nvml: &Path,
    prefix: &Path,
    layout: Layout,
) -> io::Result<Installed> {
    let mut done = Installed::default();
    let shims = [
        (cuda, CUDA_FILE, "libcuda.so"),
        (nvml, NVML_FILE, "libnvidia-ml.so"),
    ];
    let lib = match layout {
        Layout::Lib => prefix.join("lib"),
        Layout::Seed => prefix.join("opt/vgpu/lib"),
    };
    for (src, file, link_name) in shims {
        let real = copy_into(src, &lib, file)?;
        done.files.push(real.clone());
        let dirs: Vec<PathBuf> = match layout {
            Layout::Lib => vec![lib.clone()],
            Layout::Seed => SEED_DIRS.iter().map(|d| prefix.join(d)).collect(),
        };
        for dir in dirs {
            let target = if layout == Layout::Lib {
                PathBuf::from(file)
            } else {
                real.clone()
            };
            let soname = dir.join(format!("{link_name}.1"));
            force_symlink(&target, &soname)?;
            let dev = dir.join(link_name);
            force_symlink(Path::new(&format!("{link_name}.1")), &dev)?;
            done.links.push((soname, target));
            done.links
                .push((dev, PathBuf::from(format!("{link_name}.1"))));
        }
    }
    Ok(done)
}

/// An ld.so.cache of `dirs` plus the host's own configuration, built in `dir` (its
/// `ld.so.conf` and `ld.so.cache`) without touching the host's: `ldconfig -X -C -f`.
pub fn private_ld_cache(dir: &Path, dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let conf = dir.join("ld.so.conf");
    let mut text = String::new();
    for d in dirs {
        text += &format!("{}\n", d.display());
    }
    text += "include /etc/ld.so.conf\n";
    std::fs::write(&conf, text)?;
    let cache = dir.join("ld.so.cache");
    let status = std::process::Command::new("ldconfig")
        .arg("-X")
        .arg("-C")
        .arg(&cache)
        .arg("-f")
        .arg(&conf)
        .status()
        .context("cannot run ldconfig")?;
    anyhow::ensure!(
        status.success(),
        "ldconfig -C {} failed: {status}",
        cache.display()
    );
    Ok(cache)
}
