//! `vgpu-lab`: list, build and run the scenario presets.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vgpu_lab::artifacts::Artifacts;
use vgpu_lab::install::{Layout, install_shims};
use vgpu_lab::ollama::Era;
use vgpu_lab::preset::{self, PRESETS};
use vgpu_lab::run::{self, Start};
use vgpu_lab::scenario::Scenario;

#[derive(Parser)]
#[command(
    about = "Ollama discovery scenarios with the reference shims, healthy and broken on purpose"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the presets and what each era decides.
    List,
    /// Build a preset's tree in DIR and print the environment serve gets.
    Setup { preset: String, dir: PathBuf },
    /// Build a preset in a scratch dir, run `ollama serve --era ERA` there, clean up.
    Run {
        preset: String,
        #[arg(long, default_value = "b")]
        era: Era,
        /// Keep the scratch dir.
        #[arg(long)]
        keep: bool,
        /// Keep serve running after discovery, until killed.
        #[arg(long)]
        stay: bool,
        /// Build the scenario here (a new or empty dir) instead of a scratch dir.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a preset in a scratch dir and run CMD there with serve's environment (ollama
    /// first on PATH, the preset's ld.so.cache in place), e.g. `vgpu-trace doctor`.
    Exec {
        preset: String,
        #[arg(long)]
        keep: bool,
        /// Build the scenario here (a new or empty dir) instead of a scratch dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Install the reference shims under PREFIX.
    InstallShims {
        #[arg(long)]
        prefix: PathBuf,
        #[arg(long, default_value = "lib")]
        layout: Layout,
    },
}

fn find(name: &str) -> anyhow::Result<&'static preset::Preset> {
    preset::find(name).with_context(|| {
        let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown preset {name:?}; presets: {}", names.join(", "))
    })
}

fn main() {
    let code = match run_cli(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vgpu-lab: {err:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run_cli(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::List => {
            println!(
                "{:<22} {:<6} {:<6} {:<6} summary",
                "preset", "era A", "era B", "era C"
            );
            for p in PRESETS {
                let [a, b, c] = p.expect.map(|o| format!("{o:?}").to_lowercase());
                println!("{:<22} {a:<6} {b:<6} {c:<6} {}", p.name, p.summary);
            }
            Ok(0)
        }
        Cmd::Setup { preset, dir } => {
            let preset = find(&preset)?;
            let art = Artifacts::locate()?;
            let mut scenario = Scenario::new(&dir, &art)?;
            preset.build(&mut scenario)?;
            for (k, v) in &scenario.env {
                println!("{k}={v}");
            }
            if let Some(cache) = &scenario.private_cache {
                println!(
                    "# bind {} over /etc/ld.so.cache in a private mount namespace",
                    cache.display()
                );
            }
            println!("# {} serve --era b", scenario.ollama().display());
            Ok(0)
        }
        Cmd::Run {
            preset,
            era,
            keep,
            stay,
            dir,
        } => run::run(
            find(&preset)?,
            &Start::Serve { era, stay },
            keep,
            dir.as_deref(),
        ),
        Cmd::Exec {
            preset,
            keep,
            dir,
            cmd,
        } => run::run(find(&preset)?, &Start::Exec(cmd), keep, dir.as_deref()),
        Cmd::InstallShims { prefix, layout } => {
            let art = Artifacts::locate()?;
            let done = install_shims(&art.cuda_shim, &art.nvml_shim, &prefix, layout)
                .with_context(|| format!("cannot install into {}", prefix.display()))?;
            print!("{}", done.describe());
            Ok(0)
        }
    }
}
