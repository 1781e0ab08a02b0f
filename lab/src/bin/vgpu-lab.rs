//! `vgpu-lab`: list, build and run the scenario presets.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vgpu_lab::artifacts::Artifacts;
use vgpu_lab::install::{Layout, install_shims};
use vgpu_lab::ollama::Era;
use vgpu_lab::preset::{self, PRESETS};
use vgpu_lab::run::{self, Ollama, Start};
use vgpu_lab::scenario::{OllamaLayout, Scenario};

#[derive(Parser)]
#[command(
    about = "Ollama discovery scenarios with the reference shims, healthy and broken on purpose"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which Ollama the scenario installs.
#[derive(clap::Args)]
struct Install {
    /// Ollama's era: a (<= 0.12.3), b (0.12.4-0.24), c (0.30), d (0.33).
    #[arg(long, default_value = "b")]
    era: Era,
    /// tarball (/usr/local, install.sh) or docker (/usr, the official image, with MLX); default
    /// docker for era d, tarball before.
    #[arg(long)]
    layout: Option<OllamaLayout>,
}

impl Install {
    fn ollama(&self) -> Ollama {
        Ollama {
            era: self.era,
            layout: self
                .layout
                .unwrap_or_else(|| OllamaLayout::default_for(self.era)),
        }
    }
}

/// A preset's scenario, built in a scratch dir (or DIR) for `run` and `exec`.
#[derive(clap::Args)]
struct ScenarioArgs {
    preset: String,
    #[command(flatten)]
    install: Install,
    /// Keep the scratch dir.
    #[arg(long)]
    keep: bool,
    /// Build the scenario here (a new or empty dir) instead of a scratch dir.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl ScenarioArgs {
    fn start(self, start: &Start) -> anyhow::Result<i32> {
        run::run(
            find(&self.preset)?,
            self.install.ollama(),
            start,
            self.keep,
            self.dir.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// List the presets and what each era decides.
    List,
    /// Build a preset's tree in DIR and print the environment serve gets.
    Setup {
        preset: String,
        dir: PathBuf,
        #[command(flatten)]
        install: Install,
    },
    /// Build a preset in a scratch dir, run `ollama serve --era ERA` there, clean up.
    Run {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Keep serve running after discovery, until killed.
        #[arg(long)]
        stay: bool,
        /// After discovery, ask serve to load a model once (era d re-runs discovery for it).
        #[arg(long)]
        load_model: bool,
    },
    /// Build a preset in a scratch dir and run CMD there with serve's environment (ollama
    /// first on PATH, the preset's ld.so.cache in place), e.g. `vgpu-trace doctor`.
    Exec {
        #[command(flatten)]
        scenario: ScenarioArgs,
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Install the reference shims under PREFIX.
    InstallShims {
        #[arg(long)]
        prefix: PathBuf,
        #[arg(long, default_value = "lib")]
        layout: Layout,
        /// The dir holding libvgpu_cuda.so and libvgpu_nvml.so (default: next to vgpu-lab),
        /// e.g. the glibc floor build `cargo xtask shims install` makes.
        #[arg(long)]
        from: Option<PathBuf>,
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
                "{:<22} {:<6} {:<6} {:<6} {:<6} summary",
                "preset", "era A", "era B", "era C", "era D"
            );
            for p in PRESETS {
                let [a, b, c, d] = p.expect.map(|o| format!("{o:?}").to_lowercase());
                println!("{:<22} {a:<6} {b:<6} {c:<6} {d:<6} {}", p.name, p.summary);
            }
            Ok(0)
        }
        Cmd::Setup {
            preset,
            dir,
            install,
        } => {
            let preset = find(&preset)?;
            let art = Artifacts::locate()?;
            let ollama = install.ollama();
            let mut scenario = Scenario::new(&dir, &art, ollama.era, ollama.layout)?;
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
            println!(
                "# {} serve --era {}",
                scenario.ollama().display(),
                ollama.era.name()
            );
            Ok(0)
        }
        Cmd::Run {
            scenario,
            stay,
            load_model,
        } => scenario.start(&Start::Serve { stay, load_model }),
        Cmd::Exec { scenario, cmd } => scenario.start(&Start::Exec(cmd)),
        Cmd::InstallShims {
            prefix,
            layout,
            from,
        } => {
            let (cuda, nvml) = match from {
                Some(dir) => (dir.join("libvgpu_cuda.so"), dir.join("libvgpu_nvml.so")),
                None => {
                    let art = Artifacts::locate()?;
                    (art.cuda_shim, art.nvml_shim)
                }
            };
            let done = install_shims(&cuda, &nvml, &prefix, layout)
                .with_context(|| format!("cannot install into {}", prefix.display()))?;
            print!("{}", done.describe());
            Ok(0)
        }
    }
}
