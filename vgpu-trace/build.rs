//! Builds the eBPF programs (nightly, bpfel-unknown-none, bpf-linker) into OUT_DIR, where
//! `backend::ebpf` embeds them. `AYA_BUILD_SKIP=1` skips it for quick checks.
use std::path::PathBuf;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

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
    aya_build::build_ebpf(
        [Package {
            name: "vgpu-trace-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs failed; `cargo xtask setup` installs the toolchain")
}
