//! Bootstrap of the toolchain exactly as measured on these machines (docs: toolchain): rustc
//! 1.98.0 with rust-src (it builds both the tracer and, with RUSTC_BOOTSTRAP, the eBPF programs),
//! LLVM 22 development files, bpf-linker 0.13.0 built against LLVM 22; zig and cargo-zigbuild
//! for the shims' glibc floor build ([`floor_tools`]).
//! Each step checks first and skips what is already there.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{TOOLCHAIN, exec, is_root, target_dir};

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Pinned: cargo-zigbuild 0.24.1 with zig 0.16.0 (PyPI's `ziglang`) link the shims against
/// an older glibc's symbol versions than the host's (shims/README.md, glibc floor).
const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";
const ZIGLANG_VERSION: &str = "0.16.0";
/// Components of the pinned toolchain: rust-src for `-Z build-std` of the eBPF crate, and the
/// formatter and linter `cargo xtask test` runs.
const COMPONENTS: [&str; 3] = ["rust-src", "clippy", "rustfmt"];
const APT_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(what: &str) {
    eprintln!("xtask setup: {what}");
}

pub fn run() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        TOOLCHAIN,
        "--installed",
    ]))
    .unwrap_or_default();
    let missing: Vec<&str> = COMPONENTS
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        step(&format!(
            "rust {TOOLCHAIN} with {}: present",
            COMPONENTS.join(", ")
        ));
    } else {
        step(&format!(
            "rust {TOOLCHAIN}: installing {}",
            missing.join(", ")
        ));
        exec(
            Command::new("rustup")
                .args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"])
                .arg("--component")
                .arg(COMPONENTS.join(",")),
        )
        .context("rustup is required: it installs the pinned toolchain")?;
    }

    if Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        step("LLVM 22: present");
    } else {
        anyhow::ensure!(
            is_root(),
            "LLVM 22 is missing and installing it needs root: apt-get install {}",
            APT_PACKAGES.join(" ")
        );
        step("LLVM 22: installing from Debian packages");
        exec(Command::new("apt-get").arg("update"))?;
        exec(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(APT_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    let linker = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if linker.contains(BPF_LINKER_VERSION) {
        step(&format!("bpf-linker {BPF_LINKER_VERSION}: present"));
    } else {
        step(&format!(
            "bpf-linker {BPF_LINKER_VERSION}: building against LLVM 22 (a few minutes)"
        ));
        exec(
            crate::cargo()
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }
    floor_tools()?;
    Ok(())
}

/// Installs zig and cargo-zigbuild unless present (no root needed) and returns zig's path.
/// zig is pip's `ziglang` in target/tools, so that no system Python is changed.
pub fn floor_tools() -> anyhow::Result<PathBuf> {
    let dir = target_dir().join(format!("tools/ziglang-{ZIGLANG_VERSION}"));
    let zig = dir.join("ziglang/zig");
    let version = output(Command::new(&zig).arg("version")).unwrap_or_default();
    if version.trim() == ZIGLANG_VERSION {
        step(&format!("zig {ZIGLANG_VERSION}: present"));
    } else {
        step(&format!("zig {ZIGLANG_VERSION}: installing from PyPI"));
        let _ = std::fs::remove_dir_all(&dir);
        exec(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--target")
                .arg(&dir)
                .arg(format!("ziglang=={ZIGLANG_VERSION}")),
        )
        .context("python3 with pip is required: it installs zig (Debian: python3-pip)")?;
    }
    let zigbuild = output(Command::new("cargo-zigbuild").arg("--version")).unwrap_or_default();
    if zigbuild.trim() == format!("cargo-zigbuild {CARGO_ZIGBUILD_VERSION}") {
        step(&format!("cargo-zigbuild {CARGO_ZIGBUILD_VERSION}: present"));
    } else {
        step(&format!(
            "cargo-zigbuild {CARGO_ZIGBUILD_VERSION}: building (a minute)"
        ));
        exec(crate::cargo().args([
            "install",
            "cargo-zigbuild",
            "--locked",
            "--version",
            &format!("={CARGO_ZIGBUILD_VERSION}"),
        ]))?;
    }
    Ok(zig)
}
