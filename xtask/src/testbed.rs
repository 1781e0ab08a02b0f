//! What the root tests need beyond the toolchain: Go, to build a Go program that calls dlopen
//! from many threads as Ollama does (vgpu-trace/tests/go.rs); musl-tools, for a program linked
//! against musl (tests/libcs.rs); podman with runc (crun refuses a hybrid cgroup set-up like
//! these machines') and Debian root filesystems made with debootstrap, kept in
//! target/container between runs, for the container tests (vgpu-trace/tests/containers.rs):
//! Debian 12 (about 30 s to make), and Debian 11 with its compiler (glibc 2.31, which keeps
//! dlopen in libdl.so.2; about a minute).
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::{exec, is_root, target_dir};

/// The environment variables the tests find the root filesystems by.
pub const ROOTFS_ENV: &str = "VGPU_TEST_ROOTFS";
pub const ROOTFS_BULLSEYE_ENV: &str = "VGPU_TEST_ROOTFS_BULLSEYE";
const PACKAGES: [(&str, &str); 5] = [
    ("podman", "podman"),
    ("runc", "runc"),
    ("debootstrap", "debootstrap"),
    ("go", "golang-go"),
    ("musl-gcc", "musl-tools"),
];
const MIRROR: &str = "http://deb.debian.org/debian";

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs the Debian package of each (program, package) whose program is neither on PATH
/// nor in /usr/sbin (root only: the caller checks).
pub fn install_missing(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(program, _)| {
            !on_path(program) && !std::path::Path::new("/usr/sbin").join(program).exists()
        })
        .map(|(_, package)| *package)
        .collect();
    let programs: Vec<&str> = packages.iter().map(|(program, _)| *program).collect();
    if missing.is_empty() {
        eprintln!("xtask: {}: present", programs.join(", "));
        return Ok(());
    }
    eprintln!(
        "xtask: installing {} from Debian packages",
        missing.join(", ")
    );
    exec(Command::new("apt-get").arg("update"))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Installs what is missing and makes the root filesystems once: (Debian 12, Debian 11), none
/// without root (the tests need root anyway).
pub fn prepare() -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    if !is_root() {
        return Ok(None);
    }
    install_missing(&PACKAGES)?;
    let bookworm = rootfs("bookworm", &[])?;
    let bullseye = rootfs("bullseye", &["gcc", "libc6-dev"])?;
    Ok(Some((bookworm, bullseye)))
}

/// target/container/SUITE, made by debootstrap (minbase, with `include`) unless present.
fn rootfs(suite: &str, include: &[&str]) -> anyhow::Result<PathBuf> {
    let rootfs = target_dir().join("container").join(suite);
    if rootfs.join("bin/sh").exists() {
        eprintln!(
            "xtask: container root filesystem {}: present",
            rootfs.display()
        );
        return Ok(rootfs);
    }
    eprintln!("xtask: making a Debian {suite} root filesystem with debootstrap (a minute or so)");
    let partial = rootfs.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).context("creating the root filesystem's dir")?;
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    exec(cmd.arg(suite).arg(&partial).arg(MIRROR))?;
    std::fs::rename(&partial, &rootfs).context("keeping the root filesystem")?;
    Ok(rootfs)
}
