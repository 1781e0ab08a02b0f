//! What the root tests need beyond the toolchain: Go, to build a Go program that calls dlopen
//! from many threads as Ollama does (vgpu-trace/tests/go.rs); podman with runc (crun refuses a
//! hybrid cgroup set-up like these machines') and a Debian root filesystem made with
//! debootstrap, kept in target/container/bookworm between runs (about 30 s to make), for the
//! container tests (vgpu-trace/tests/containers.rs).
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::{exec, is_root, target_dir};

/// The environment variable the test finds the root filesystem by.
pub const ROOTFS_ENV: &str = "VGPU_TEST_ROOTFS";
const PACKAGES: [(&str, &str); 4] = [
    ("podman", "podman"),
    ("runc", "runc"),
    ("debootstrap", "debootstrap"),
    ("go", "golang-go"),
];
const MIRROR: &str = "http://deb.debian.org/debian";

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs what is missing and makes the root filesystem once; none without root (the test
/// needs root anyway).
pub fn prepare() -> anyhow::Result<Option<PathBuf>> {
    if !is_root() {
        return Ok(None);
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| {
            !on_path(program) && !std::path::Path::new("/usr/sbin").join(program).exists()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: podman, runc, debootstrap, go: present");
    } else {
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
        )?;
    }
    let rootfs = target_dir().join("container/bookworm");
    if rootfs.join("bin/sh").exists() {
        eprintln!(
            "xtask: container root filesystem {}: present",
            rootfs.display()
        );
        return Ok(Some(rootfs));
    }
    eprintln!("xtask: making a Debian root filesystem with debootstrap (about 30 s)");
    let partial = rootfs.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).context("creating the root filesystem's dir")?;
    exec(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&partial)
            .arg(MIRROR),
    )?;
    std::fs::rename(&partial, &rootfs).context("keeping the root filesystem")?;
    Ok(Some(rootfs))
}
