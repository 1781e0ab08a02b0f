//! `cargo xtask fuzz [--seconds N] [--target NAME]`: fuzz the parsers of outside input with
//! cargo-fuzz, each target for N seconds, then minimise its corpus in fuzz/corpus to
//! the inputs that add coverage.
use std::process::Command;

use anyhow::bail;

use crate::{cargo, exec, workspace_root};

/// The fuzz targets and the longest input each is given.
const TARGETS: &[(&str, u32)] = &[
    // Records, the sinks they feed and the check rules.
    ("replay", 1024),
    // ELF facts, from memory and from a file read by ranges.
    ("elf", 4096),
    // ld.so.cache.
    ("ldcache", 4096),
    // ld.so.conf trees, includes and links written into a scratch root.
    ("ldconf", 1024),
    // The shims configuration, shims.toml.
    ("shims_config", 1024),
];

#[derive(clap::Args)]
pub struct Options {
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
    /// Only this target: replay, elf, ldcache, ldconf or shims_config (default: all).
    #[arg(long)]
    target: Option<String>,
}

/// cargo-fuzz on the pinned toolchain, which RUSTC_BOOTSTRAP lets use sanitizers and `-Z` flags
/// (the tracer needs rustc 1.98, newer than the machine's nightly).
fn cargo_fuzz() -> Command {
    let mut c = cargo();
    c.env("RUSTC_BOOTSTRAP", "1")
        .current_dir(workspace_root().join("fuzz"))
        .arg("fuzz");
    c
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(name, _)| opts.target.as_deref().is_none_or(|t| t == *name))
        .collect();
    if targets.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|(name, _)| *name).collect();
        let name = opts.target.as_deref().unwrap_or_default();
        bail!(
            "no fuzz target {name:?}: expected one of {}",
            names.join(", ")
        );
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        exec(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    for (name, max_len) in targets {
        let corpus = format!("corpus/{name}");
        let max_len = format!("-max_len={max_len}");
        exec(cargo_fuzz().args(["run", name, &corpus, "--"]).args([
            format!("-max_total_time={}", opts.seconds),
            max_len.clone(),
            // A run this slow is a hang worth reporting, not a slow input.
            "-timeout=10".into(),
        ]))?;
        // Keep the corpus small: the fewest inputs that reach every edge reached (hit counts
        // left out, else thousands of near-copies stay).
        exec(
            cargo_fuzz()
                .args(["cmin", name, &corpus, "--", &max_len])
                .args(["-set_cover_merge=1", "-use_counters=0"]),
        )?;
    }
    Ok(())
}
