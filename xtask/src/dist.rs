//! `cargo xtask dist` and `cargo xtask install [--prefix DIR]`: the static (musl) tracer, the
//! reference shims, man pages, shell completions, the README and the licences, the watch
//! daemon's systemd unit and alerting rules, laid out as under a prefix; packed as
//! `vgpu-trace-VERSION-x86_64-linux-musl.tar.gz` and a `.deb` (cargo-deb, from the same
//! files), or copied under a prefix.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

use crate::{cargo, exec, target_dir, workspace_root};

pub const MUSL: &str = "x86_64-unknown-linux-musl";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// cargo-deb, pinned: `cargo xtask dist` installs it when missing.
const CARGO_DEB: &str = "3.8.0";
/// The watch daemon's unit as the .deb installs it (ExecStart=/usr/bin/vgpu-trace), and where
/// it goes under a prefix: /usr/local/lib/systemd/system is on systemd's search path too.
const UNIT: &str = "xtask/assets/vgpu-trace-watch.service";
const UNIT_PATH: &str = "lib/systemd/system/vgpu-trace-watch.service";
/// Where the README has the tarball copied, which its unit starts the tracer from.
const TARBALL_PREFIX: &str = "/usr/local";

/// `vgpu-trace-VERSION-x86_64-linux-musl`.
pub fn name() -> String {
    format!("vgpu-trace-{VERSION}-x86_64-linux-musl")
}

/// The static (musl) tracer, in target/x86_64-unknown-linux-musl/release.
pub fn build_static_tracer() -> anyhow::Result<()> {
    exec(Command::new("rustup").args(["target", "add", MUSL, "--toolchain", crate::TOOLCHAIN]))?;
    exec(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "--target",
        MUSL,
        "-p",
        "vgpu-trace",
    ]))
}

/// The tree `dist` packs and `install` copies, relative to a prefix.
fn stage_dir() -> PathBuf {
    target_dir().join("dist/stage")
}

/// The unit for a tree installed under `prefix`: the tracer and the documentation it names
/// are those under `prefix`.
fn unit_for(prefix: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(workspace_root().join(UNIT))
        .with_context(|| format!("reading {UNIT}"))?;
    let (exec, doc) = (
        "ExecStart=/usr/bin/vgpu-trace ",
        "file:/usr/share/doc/vgpu-trace/",
    );
    ensure!(
        text.contains(exec) && text.contains(doc),
        "{UNIT} has no {exec:?} or {doc:?}"
    );
    let prefix = prefix.display();
    Ok(text
        .replace(exec, &format!("ExecStart={prefix}/bin/vgpu-trace "))
        .replace(doc, &format!("file:{prefix}/share/doc/vgpu-trace/")))
}

/// Builds the static tracer and the shims and lays the tree to be installed under `prefix`
/// out in target/dist/stage.
pub fn stage(prefix: &Path) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    build_static_tracer()?;
    let floor = crate::shims::build()?;
    let target = target_dir();
    let stage = stage_dir();
    let _ = std::fs::remove_dir_all(&stage);
    let put = |from: &Path, to: &str, mode: u32| -> anyhow::Result<PathBuf> {
        let dest = stage.join(to);
        std::fs::create_dir_all(dest.parent().unwrap_or(&stage))?;
        std::fs::copy(from, &dest).with_context(|| format!("copying {}", from.display()))?;
        set_mode(&dest, mode)?;
        Ok(dest)
    };
    let tracer = put(
        &target.join(MUSL).join("release/vgpu-trace"),
        "bin/vgpu-trace",
        0o755,
    )?;
    exec(Command::new("strip").arg(&tracer))?;
    // Debug info would triple what users download; the source tree keeps it.
    // The reference shims (the glibc floor build), with the soname and link-time names a shim
    // package ships; the dir is on no search path until someone puts it there.
    let shims = "lib/vgpu-trace/shims";
    for (built, file, soname) in [
        ("libvgpu_cuda.so", "libvgpu-cuda.so", "libcuda.so"),
        ("libvgpu_nvml.so", "libvgpu-nvml.so", "libnvidia-ml.so"),
    ] {
        let shim = put(&floor.join(built), &format!("{shims}/{file}"), 0o755)?;
        exec(Command::new("strip").arg(&shim))?;
        let dir = stage.join(shims);
        std::os::unix::fs::symlink(file, dir.join(format!("{soname}.1")))?;
        std::os::unix::fs::symlink(format!("{soname}.1"), dir.join(soname))?;
    }
    exec(
        Command::new(&tracer)
            .arg("manpages")
            .arg(stage.join("share/man/man1")),
    )?;
    for (shell, path) in [
        ("bash", "share/bash-completion/completions/vgpu-trace"),
        ("zsh", "share/zsh/site-functions/_vgpu-trace"),
        ("fish", "share/fish/vendor_completions.d/vgpu-trace.fish"),
    ] {
        let out = Command::new(&tracer)
            .args(["completions", shell])
            .output()?;
        ensure!(
            out.status.success(),
            "vgpu-trace completions {shell} failed"
        );
        let dest = stage.join(path);
        std::fs::create_dir_all(dest.parent().unwrap_or(&stage))?;
        std::fs::write(&dest, out.stdout)?;
    }
    for (from, to) in [
        ("README.md", "README.md"),
        ("LICENSE-MIT", "LICENSE-MIT"),
        ("LICENSE-APACHE", "LICENSE-APACHE"),
        ("shims/README.md", "shims.md"),
        ("docs/watch.md", "watch.md"),
        ("docs/alerts.yml", "alerts.yml"),
    ] {
        put(
            &root.join(from),
            &format!("share/doc/vgpu-trace/{to}"),
            0o644,
        )?;
    }
    let unit = stage.join(UNIT_PATH);
    std::fs::create_dir_all(unit.parent().unwrap_or(&stage))?;
    std::fs::write(&unit, unit_for(prefix)?)?;
    set_mode(&unit, 0o644)?;
    Ok(stage)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The tarball and the .deb, in target/dist, each checked as a user would use it.
pub fn dist() -> anyhow::Result<()> {
    let stage = stage(Path::new(TARBALL_PREFIX))?;
    let dir = target_dir().join("dist");
    let tarball = dir.join(format!("{}.tar.gz", name()));
    // One top dir named after the release, owned by root whoever builds it.
    exec(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .args(["--owner=0", "--group=0", "--numeric-owner", "--sort=name"])
            .arg(format!("--transform=s,^stage,{},", name()))
            .arg("-C")
            .arg(&dir)
            .arg(stage.file_name().unwrap_or_default()),
    )?;
    let deb = deb(&dir)?;
    check(&tarball, &deb)?;
    println!("{}\n{}", tarball.display(), deb.display());
    Ok(())
}

/// The .deb from the staged files (`[package.metadata.deb]` of vgpu-trace/Cargo.toml).
fn deb(dir: &Path) -> anyhow::Result<PathBuf> {
    let installed = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB));
    if !installed {
        exec(cargo().args([
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            &format!("={CARGO_DEB}"),
        ]))?;
    }
    let deb = dir.join(format!("vgpu-trace_{VERSION}-1_amd64.deb"));
    exec(
        cargo()
            .current_dir(workspace_root())
            .args([
                "deb",
                "--quiet",
                "-p",
                "vgpu-trace",
                "--no-build",
                "--no-strip",
            ])
            .arg("--output")
            .arg(&deb),
    )?;
    Ok(deb)
}

/// Copies the staged tree under `prefix`, keeping links and modes.
pub fn install(prefix: &Path) -> anyhow::Result<()> {
    // The unit names the tracer by an absolute path.
    std::fs::create_dir_all(prefix)
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    let prefix = prefix.canonicalize()?;
    let stage = stage(&prefix)?;
    copy_tree(&stage, &prefix)?;
    println!(
        "installed under {}: bin/vgpu-trace, lib/vgpu-trace/shims, {UNIT_PATH}, \
         share/{{man,doc,completions}}",
        prefix.display()
    );
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from)?.flatten() {
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let _ = std::fs::remove_file(&dest);
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dest)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).with_context(|| format!("copying to {}", dest.display()))?;
        }
    }
    Ok(())
}

/// What a user gets: the tarball unpacked under a scratch prefix runs and has its man page,
/// `install` lays out the same tree, and the .deb holds it under /usr.
fn check(tarball: &Path, deb: &Path) -> anyhow::Result<()> {
    let scratch = target_dir().join("dist/check");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    exec(
        Command::new("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("-C")
            .arg(&scratch),
    )?;
    let prefix = scratch.join(name());
    expect_runs(&prefix)?;
    expect_unit(&prefix.join(UNIT_PATH), TARBALL_PREFIX, &prefix)?;
    let installed = scratch.join("prefix");
    copy_tree(&stage_dir(), &installed)?;
    expect_runs(&installed)?;
    let unpacked = scratch.join("deb");
    exec(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked))?;
    expect_runs(&unpacked.join("usr"))?;
    expect_unit(&unpacked.join(UNIT_PATH), "/usr", &unpacked.join("usr"))?;
    println!(
        "xtask dist: the tarball, an install and the .deb each run and have their man page; \
         the units of the tarball and the .deb start the tracer each installs"
    );
    Ok(())
}

/// The watch unit at `unit` starts `vgpu-trace watch` from `installed_at` (/usr for the .deb),
/// where `tree`'s files go: the binary that package installs.
fn expect_unit(unit: &Path, installed_at: &str, tree: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(unit)
        .with_context(|| format!("the package lacks {}", unit.display()))?;
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .with_context(|| format!("{} has no ExecStart", unit.display()))?;
    let program = exec.split_whitespace().next().unwrap_or_default();
    let relative = Path::new(program)
        .strip_prefix(installed_at)
        .with_context(|| {
            format!(
                "{}: ExecStart={exec} is not under {installed_at}",
                unit.display()
            )
        })?;
    ensure!(
        exec.split_whitespace().nth(1) == Some("watch") && tree.join(relative).is_file(),
        "{}: ExecStart={exec}, but the package has no {}",
        unit.display(),
        tree.join(relative).display()
    );
    Ok(())
}

/// `PREFIX/bin/vgpu-trace --version`, `man -l` on its page, and the shims' glibc floor.
fn expect_runs(prefix: &Path) -> anyhow::Result<()> {
    let out = Command::new(prefix.join("bin/vgpu-trace"))
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}/bin/vgpu-trace", prefix.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && version.trim() == format!("vgpu-trace {VERSION}"),
        "{}/bin/vgpu-trace --version said {version:?}",
        prefix.display()
    );
    // cargo-deb compresses pages, as Debian does; man reads either.
    let page = ["vgpu-trace-run.1", "vgpu-trace-run.1.gz"]
        .map(|p| prefix.join("share/man/man1").join(p))
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no vgpu-trace-run.1", prefix.display()))?;
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .context("cannot run man")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("vgpu-trace-run") {
        bail!("man -l {} printed:\n{text}", page.display());
    }
    for path in [
        "share/bash-completion/completions/vgpu-trace",
        "share/doc/vgpu-trace/LICENSE-APACHE",
        "share/doc/vgpu-trace/alerts.yml",
        "share/doc/vgpu-trace/watch.md",
    ] {
        ensure!(
            prefix.join(path).is_file(),
            "{} lacks {path}",
            prefix.display()
        );
    }
    // The shims load on the glibc floor (shims/README.md).
    for file in ["libvgpu-cuda.so", "libvgpu-nvml.so"] {
        crate::shims::check_floor(&prefix.join("lib/vgpu-trace/shims").join(file))?;
    }
    Ok(())
}
