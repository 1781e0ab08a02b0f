//! `cargo xtask fuzz [--seconds N]`: fuzz the record parser (replay, the sinks it feeds, the
//! check rules parser) with cargo-fuzz, growing the kept corpus in vgpu-trace/fuzz/corpus.
use std::process::Command;

use crate::{cargo, exec, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    seconds: u32,
}

/// cargo-fuzz on the pinned toolchain, which RUSTC_BOOTSTRAP lets use sanitizers and `-Z` flags
/// (the tracer needs rustc 1.98, newer than the machine's nightly).
fn cargo_fuzz() -> Command {
    let mut c = cargo();
    c.env("RUSTC_BOOTSTRAP", "1")
        .current_dir(workspace_root().join("vgpu-trace/fuzz"))
        .arg("fuzz");
    c
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        exec(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    exec(
        cargo_fuzz()
            .args(["run", "replay", "corpus/replay", "--"])
            .args([
                format!("-max_total_time={}", opts.seconds),
                "-max_len=1024".into(),
            ]),
    )?;
    // Keep the corpus small: only inputs that add coverage.
    exec(cargo_fuzz().args(["cmin", "replay", "corpus/replay", "--", "-max_len=1024"]))
}
