//! Running a preset: build its scratch root, start `ollama serve` there with the preset's
//! environment (and, where the preset needs one, its own ld.so.cache inside a private mount
//! namespace), pass its exit status through, and clean up.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::artifacts::Artifacts;
use crate::ollama::Era;
use crate::preset::{Preset, Requires};
use crate::scenario::{OllamaLayout, Scenario};

/// Inherited variables that would change what the preset means.
fn scrubbed(key: &str) -> bool {
    key == "LD_LIBRARY_PATH"
        || key == "LD_PRELOAD"
        || key == "CUDA_VISIBLE_DEVICES"
        || key.starts_with("VGPU_")
        || key.starts_with("GGML_")
        || (key.starts_with("OLLAMA_") && key != "OLLAMA_DEBUG")
}

/// A new private dir under the temp dir (O_EXCL-made, mode 0700): the lab runs as root, and
/// a name others could guess and plant first would let them shape its scenario.
fn scratch_dir(preset: &Preset) -> anyhow::Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("vgpu-lab-{}-", preset.name))
        .tempdir()
        .context("creating a scratch dir")?
        .keep())
}

/// What to start inside the preset's scenario.
pub enum Start {
    /// `ollama serve --era ERA` (with `--stay`, `--load-model`).
    Serve { stay: bool, load_model: bool },
    /// Any command, with serve's environment and the scenario's bin dir first on PATH.
    Exec(Vec<String>),
}

/// The Ollama a scenario installs.
#[derive(Clone, Copy, Debug)]
pub struct Ollama {
    pub era: Era,
    pub layout: OllamaLayout,
}

/// Runs `start` in a fresh scenario at `dir` (default: a scratch dir under the temp dir).
pub fn run(
    preset: &Preset,
    ollama: Ollama,
    start: &Start,
    keep: bool,
    dir: Option<&Path>,
) -> anyhow::Result<i32> {
    let art = Artifacts::locate()?;
    if preset.requires == Requires::Root && !is_root() {
        bail!(
            "preset {} needs root: it replaces ld.so.cache inside a private mount namespace",
            preset.name
        );
    }
    let root = match dir {
        Some(dir) => {
            if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
                bail!(
                    "{} is not empty: the lab builds its scenario in a new or empty dir",
                    dir.display()
                );
            }
            dir.to_path_buf()
        }
        None => scratch_dir(preset)?,
    };
    let result = build_and_start(preset, ollama, start, &art, &root);
    if keep {
        eprintln!("vgpu-lab: kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn build_and_start(
    preset: &Preset,
    ollama: Ollama,
    start: &Start,
    art: &Artifacts,
    root: &Path,
) -> anyhow::Result<i32> {
    let era = ollama.era;
    let mut scenario = Scenario::new(root, art, era, ollama.layout)?;
    preset
        .build(&mut scenario)
        .with_context(|| format!("cannot build preset {}", preset.name))?;
    if let Some(cache) = &scenario.private_cache {
        use_private_cache(cache)?;
    }
    let mut cmd = match start {
        Start::Serve { stay, load_model } => {
            eprintln!(
                "vgpu-lab: preset {} (era {era:?}, {:?} layout): {}; expect {:?}",
                preset.name,
                ollama.layout,
                preset.summary,
                preset.expect(era)
            );
            let mut cmd = Command::new(scenario.ollama());
            cmd.args(["serve", "--era", era.name()]);
            if *stay {
                cmd.arg("--stay");
            }
            if *load_model {
                cmd.arg("--load-model");
            }
            cmd
        }
        Start::Exec(argv) => {
            let (program, args) = argv.split_first().context("exec needs a command")?;
            let mut cmd = Command::new(program);
            cmd.args(args);
            let path = std::env::var("PATH").unwrap_or_default();
            let bin = scenario
                .ollama()
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            cmd.env("PATH", format!("{bin}:{path}"));
            cmd
        }
    };
    for (key, _) in std::env::vars_os() {
        if scrubbed(&key.to_string_lossy()) {
            cmd.env_remove(key);
        }
    }
    cmd.envs(scenario.env.iter().map(|(k, v)| (k, v)));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
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
