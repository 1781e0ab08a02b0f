//! `cargo xtask gpu-kit`: what a GPU machine without cargo needs to run the lab under the
//! tracer — a static (musl) vgpu-trace, the release lab, the shims' glibc floor build, the
//! lab's C stand-ins and `run.sh` — in `target/gpu-kit`.
use std::path::Path;

use anyhow::Context as _;

use crate::dist::MUSL;
use crate::{cargo, exec, target_dir, workspace_root};

pub fn run() -> anyhow::Result<()> {
    build()?;
    let root = workspace_root();
    let kit = target_dir().join("gpu-kit");
    gather(&kit, &["dl-bench"])?;
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, kit.join(name)).with_context(|| format!("copying {}", from.display()))
    };
    copy(&root.join("xtask/assets/gpu-kit-run.sh"), "run.sh")?;
    copy(&root.join("xtask/assets/gpu-kit-ptrace.sh"), "ptrace.sh")?;
    copy(
        &root.join("xtask/assets/gpu-kit-fixtures.sh"),
        "fixtures.sh",
    )?;
    copy(&root.join("xtask/assets/gpu-kit-scrub.py"), "scrub.py")?;
    real_ollama(&root, &kit)?;
    println!(
        "{}: carry it to the GPU machine and run `bash target/gpu-kit/run.sh` there",
        kit.display()
    );
    Ok(())
}

/// Builds what a kit holds: the release lab and fixtures, the shims' glibc floor build and
/// the static tracer.
pub fn build() -> anyhow::Result<()> {
    exec(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "vgpu-lab",
        "-p",
        "vgpu-trace-fixtures",
    ]))?;
    crate::shims::build()?;
    crate::dist::build_static_tracer()
}

/// Makes `kit` afresh from what `build` made: the static tracer, the lab, the floor-built
/// shims and the named release `fixtures`, stripped, and the lab's C stand-ins in `kit/lab`.
pub fn gather(kit: &Path, fixtures: &[&str]) -> anyhow::Result<()> {
    let target = target_dir();
    let release = target.join("release");
    let floor = target.join(crate::shims::FLOOR_DIR);
    let _ = std::fs::remove_dir_all(kit);
    std::fs::create_dir_all(kit.join("lab"))
        .with_context(|| format!("creating {}", kit.display()))?;
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, kit.join(name)).with_context(|| format!("copying {}", from.display()))
    };
    copy(&target.join(MUSL).join("release/vgpu-trace"), "vgpu-trace")?;
    for name in crate::shims::FILES {
        copy(&floor.join(name), name)?;
    }
    let mut binaries = vec!["vgpu-trace", "vgpu-lab", "ollama"];
    binaries.extend_from_slice(fixtures);
    for name in &binaries[1..] {
        copy(&release.join(name), name)?;
    }
    binaries.extend(crate::shims::FILES);
    // Debug info would push the kit past what a device run may carry (64 MiB).
    exec(
        std::process::Command::new("strip")
            .current_dir(kit)
            .args(&binaries),
    )?;
    copy_lab(&lab_libs()?, &kit.join("lab"))
}

/// The C stand-ins of the build just made: the newest vgpu-lab build-script output.
pub fn lab_libs() -> anyhow::Result<std::path::PathBuf> {
    let release = target_dir().join("release");
    std::fs::read_dir(release.join("build"))
        .context("reading target/release/build")?
        .flatten()
        .map(|e| e.path().join("out/lab"))
        .filter(|p| p.join("cuda_v12/libggml-cuda.so").exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("no vgpu-lab build output in target/release/build")
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

/// What `real-ollama.sh` needs beside the kit: the real Ollama's release tarball and its
/// cuda_v13 build kit (from the copy beside the project, where there is one), the tiny model,
/// and the rules each record is checked against (those of tests/data/real).
fn real_ollama(root: &Path, kit: &Path) -> anyhow::Result<()> {
    let source = root.join("../shared/real-ollama");
    if !source.join("gpu/build-cuda_v13.sh").exists() {
        eprintln!(
            "xtask: no real Ollama at {}: the kit has no real-ollama.sh",
            source.display()
        );
        return Ok(());
    }
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))
    };
    let real = kit.join("real-ollama");
    std::fs::create_dir_all(real.join("gpu"))?;
    let tarball = "ollama-v0.32.15-linux-amd64.tar.xz";
    copy(&source.join(tarball), &real.join(tarball))?;
    for entry in std::fs::read_dir(source.join("gpu"))?.flatten() {
        copy(&entry.path(), &real.join("gpu").join(entry.file_name()))?;
    }
    copy(
        &root.join("xtask/assets/gpu-kit-real-ollama.sh"),
        &kit.join("real-ollama.sh"),
    )?;
    let rules = kit.join("real");
    std::fs::create_dir_all(&rules)?;
    for name in [
        "real-ollama-driver",
        "real-ollama-passthrough",
        "real-ollama-model",
        "torch-passthrough",
    ] {
        let file = format!("{name}.toml");
        copy(
            &root.join("vgpu-trace/tests/data/real").join(&file),
            &rules.join(&file),
        )?;
    }
    let tiny = root.join("lab/tiny-model");
    exec(
        std::process::Command::new("python3")
            .arg(tiny.join("make_tiny_gguf.py"))
            .arg(kit.join("tiny.gguf")),
    )?;
    copy(&tiny.join("Modelfile.in"), &kit.join("Modelfile.in"))?;
    Ok(())
}
