//! `cargo xtask gpu-kit`: what a GPU machine without cargo needs to run the lab under the
//! tracer — a static (musl) vgpu-trace, the release lab and shims, the lab's C stand-ins and
//! `run.sh` — in `target/gpu-kit`.
use std::path::Path;

use anyhow::Context as _;

use crate::dist::MUSL;
use crate::{cargo, exec, target_dir, workspace_root};

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    exec(cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "vgpu-lab",
        "-p",
        "vgpu-cuda",
        "-p",
        "vgpu-nvml",
        "-p",
        "vgpu-trace-fixtures",
    ]))?;
    crate::dist::build_static_tracer()?;
    let target = target_dir();
    let release = target.join("release");
    let kit = target.join("gpu-kit");
    let _ = std::fs::remove_dir_all(&kit);
    std::fs::create_dir_all(kit.join("lab"))?;
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, kit.join(name)).with_context(|| format!("copying {}", from.display()))
    };
    copy(&target.join(MUSL).join("release/vgpu-trace"), "vgpu-trace")?;
    for name in [
        "vgpu-lab",
        "ollama",
        "libvgpu_cuda.so",
        "libvgpu_nvml.so",
        "dl-bench",
    ] {
        copy(&release.join(name), name)?;
    }
    copy(&root.join("xtask/assets/gpu-kit-run.sh"), "run.sh")?;
    copy(&root.join("xtask/assets/gpu-kit-ptrace.sh"), "ptrace.sh")?;
    copy(
        &root.join("xtask/assets/gpu-kit-fixtures.sh"),
        "fixtures.sh",
    )?;
    copy(&root.join("xtask/assets/gpu-kit-scrub.py"), "scrub.py")?;
    // Debug info would push the kit past what a device run may carry (64 MiB).
    exec(std::process::Command::new("strip").current_dir(&kit).args([
        "vgpu-trace",
        "vgpu-lab",
        "ollama",
        "libvgpu_cuda.so",
        "libvgpu_nvml.so",
        "dl-bench",
    ]))?;
    // The C stand-ins of the build just made: the newest vgpu-lab build-script output.
    let libs = std::fs::read_dir(release.join("build"))?
        .flatten()
        .map(|e| e.path().join("out/lab"))
        .filter(|p| p.join("cuda_v12/libggml-cuda.so").exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("no vgpu-lab build output in target/release/build")?;
    copy_lab(&libs, &kit.join("lab"))?;
    println!(
        "{}: carry it to the GPU machine and run `bash target/gpu-kit/run.sh` there",
        kit.display()
    );
    Ok(())
}

/// The stand-ins and their per-backend dirs (cuda_v12, vulkan, ...), without the link-time
/// symlink dirs.
fn copy_lab(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)?.flatten() {
        let path = entry.path();
        if path.is_dir() && entry.file_name() != "link" {
            copy_lab(&path, &to.join(entry.file_name()))?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
