//! Running a preset: build its scratch root, start `ollama serve` there with the preset's
//! environment (and, where the preset needs one, its own ld.so.cache inside a private mount
//! namespace), pass its exit status through, and clean up.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::artifacts::Artifacts;
use crate::ollama::Era;
use crate::preset::{Preset, Requires};
use crate::scenario::Scenario;

pub struct Options {
    pub era: Era,
    /// Keep the scratch root (printed) instead of removing it.
    pub keep: bool,
    /// Keep serve running after discovery (until killed), as a real server does.
    pub stay: bool,
}

/// Inherited variables that would change what the preset means.
fn scrubbed(key: &str) -> bool {
    key == "LD_LIBRARY_PATH"
        || key == "LD_PRELOAD"
        || key == "CUDA_VISIBLE_DEVICES"
        || key.starts_with("VGPU_")
        || key.starts_with("GGML_")
        || (key.starts_with("OLLAMA_") && key != "OLLAMA_DEBUG")
}

pub fn scratch_dir(preset: &Preset) -> PathBuf {
    std::env::temp_dir().join(format!("vgpu-lab-{}-{}", preset.name, std::process::id()))
}

pub fn run(preset: &Preset, opts: &Options) -> anyhow::Result<i32> {
    let art = Artifacts::locate()?;
    if preset.requires == Requires::Root && !is_root() {
        bail!(
            "preset {} needs root: it replaces ld.so.cache inside a private mount namespace",
            preset.name
        );
    }
    let root = scratch_dir(preset);
    let _ = std::fs::remove_dir_all(&root);
    let result = build_and_serve(preset, opts, &art, &root);
    if opts.keep {
        eprintln!("vgpu-lab: kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn build_and_serve(
    preset: &Preset,
    opts: &Options,
    art: &Artifacts,
    root: &Path,
) -> anyhow::Result<i32> {
    let mut scenario = Scenario::new(root, art)?;
    preset
        .build(&mut scenario)
        .with_context(|| format!("cannot build preset {}", preset.name))?;
    eprintln!(
        "vgpu-lab: preset {} (era {:?}): {}; expect {:?}",
        preset.name,
        opts.era,
        preset.summary,
        preset.expect(opts.era)
    );
    if let Some(cache) = &scenario.private_cache {
        use_private_cache(cache)?;
    }
    let mut cmd = Command::new(scenario.ollama());
    cmd.args(["serve", "--era", &format!("{:?}", opts.era).to_lowercase()]);
    if opts.stay {
        cmd.arg("--stay");
    }
    for (key, _) in std::env::vars_os() {
        if scrubbed(&key.to_string_lossy()) {
            cmd.env_remove(key);
        }
    }
    cmd.envs(scenario.env.iter().map(|(k, v)| (k, v)));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", scenario.ollama().display()))?;
    Ok(status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    }))
}

/// From here on this process and its children see `cache` as /etc/ld.so.cache; the host does not.
fn use_private_cache(cache: &Path) -> anyhow::Result<()> {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the new mount namespace")?;
    mount(
        Some(cache),
        "/etc/ld.so.cache",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {} over /etc/ld.so.cache", cache.display()))?;
    Ok(())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
