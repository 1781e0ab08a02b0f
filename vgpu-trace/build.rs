//! Builds the eBPF programs (bpfel-unknown-none, bpf-linker) into OUT_DIR, where
//! `backend::ebpf` embeds them, with the toolchain that builds this crate: rustc 1.98.0, whose
//! LLVM is bpf-linker's, allowed `-Z build-std` by RUSTC_BOOTSTRAP.
use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// The pinned toolchain `cargo xtask setup` installs, when this build did not come through
/// rustup's proxy (which names the toolchain in RUSTUP_TOOLCHAIN).
const DEFAULT_TOOLCHAIN: &str = "1.98.0";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../vgpu-trace-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("eBPF crate not found at {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to the eBPF crate")?;
    println!("cargo:rerun-if-changed=../vgpu-trace-common/src");
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let toolchain =
        std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_string());
    // SAFETY: the build script is single-threaded; the variable is for the eBPF cargo it runs.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [Package {
            name: "vgpu-trace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs failed; `cargo xtask setup` installs the toolchain")
}
