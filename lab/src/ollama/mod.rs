//! `ollama`: a stand-in for Ollama's GPU discovery in its four eras (see
//! shared knowledge in the repository's docs). It runs the same processes with the same argv and
//! environment, makes the same dlopen/dlsym calls in the same order, prints the same log lines,
//! and ends with the same decision: an `inference compute ... library=` line.
//!
//! Lab-only knobs (not in Ollama): `OLLAMA_LAB_DISCOVERY_TIMEOUT` (seconds) shortens the 30 s /
//! 15 s discovery timeouts; `VGPU_LAB_ROOT` roots era A's fixed library globs in a scratch tree;
//! `serve --load-model` asks for one model load after discovery (era D refreshes discovery then).
mod child;
mod device;
mod era_a;
mod era_b;
mod era_c;
mod era_d;
mod gpu_discover;
mod mlx;
mod runner;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

pub use device::Gpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    A,
    B,
    C,
    D,
}

impl std::str::FromStr for Era {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "a" | "A" => Ok(Era::A),
            "b" | "B" => Ok(Era::B),
            "c" | "C" => Ok(Era::C),
            "d" | "D" => Ok(Era::D),
            _ => bail!("unknown era {s:?}: expected a, b, c or d"),
        }
    }
}

impl Era {
    pub fn version(self) -> &'static str {
        match self {
            Era::A => "0.12.3",
            Era::B => "0.13.2",
            Era::C => "0.30.0",
            Era::D => "0.33.0",
        }
    }

    pub const ALL: [Era; 4] = [Era::A, Era::B, Era::C, Era::D];

    /// `a` ... `d`, as `--era` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Era::A => "a",
            Era::B => "b",
            Era::C => "c",
            Era::D => "d",
        }
    }
}

/// Where this `ollama` and its libraries live.
pub struct Install {
    pub exe: PathBuf,
    /// `<exe dir>/../lib/ollama`, as Ollama's `LibOllamaPath`.
    pub lib_ollama: PathBuf,
}

impl Install {
    fn locate() -> anyhow::Result<Self> {
        let exe =
            std::fs::canonicalize("/proc/self/exe").context("cannot resolve /proc/self/exe")?;
        let bin = exe.parent().unwrap_or(Path::new("/"));
        let lib_ollama = [bin.join("../lib/ollama"), bin.join("lib/ollama")]
            .into_iter()
            .find(|p| p.is_dir())
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .unwrap_or_else(|| bin.join("../lib/ollama"));
        Ok(Self { exe, lib_ollama })
    }
}

pub fn discovery_timeout(default: Duration) -> Duration {
    std::env::var("OLLAMA_LAB_DISCOVERY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(default, Duration::from_secs_f64)
}

pub fn main() -> anyhow::Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let install = Install::locate()?;
    // v0.16+: an init() in every `ollama` process, before any subcommand runs.
    mlx::load(&install);
    match args.first().map(String::as_str) {
        Some("serve") => serve(&install, &args[1..]),
        Some("runner") => runner::main(&install, &args[1..]),
        Some("gpu-discover") => gpu_discover::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: ollama serve [--era a|b|c|d] [--stay] [--load-model] | runner ... | gpu-discover ..."
            );
            Ok(2)
        }
    }
}

fn serve(install: &Install, args: &[String]) -> anyhow::Result<i32> {
    let mut era = Era::B;
    let mut stay = false;
    let mut load_model = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--era" => era = it.next().context("--era needs a value")?.parse()?,
            "--stay" => stay = true,
            "--load-model" => load_model = true,
            other => bail!("unknown serve argument {other:?}"),
        }
    }
    let gpus = match era {
        Era::A => era_a::discover(install),
        Era::B => era_b::discover(install),
        Era::C => era_c::discover(install),
        Era::D => era_d::discover(install),
    };
    device::log_inference_compute(era, &gpus);
    if load_model && era == Era::D {
        era_d::refresh_for_model_load(install, &gpus);
    }
    if stay {
        // A real server keeps running; the lab's attach tests need that. SIGTERM ends it.
        loop {
            std::thread::park();
        }
    }
    Ok(0)
}
