//! The real Ollama, for the tests that trace it (vgpu-trace/tests/real_ollama.rs): laid out in
//! target/real-ollama by the `setup.sh` of a checkout of it beside the project
//! (`../shared/real-ollama`, or the dir `VGPU_REAL_OLLAMA_SRC` names). It is not part of the
//! project; without it those tests say they were skipped.
use std::path::PathBuf;
use std::process::Command;

use crate::{exec, target_dir, workspace_root};

/// The environment variable the tests find the laid-out Ollama by.
pub const ENV: &str = "VGPU_TEST_REAL_OLLAMA";

/// Lays out the real Ollama (idempotent: its setup.sh keeps a finished tree), or None where no
/// copy of it is beside the project.
pub fn prepare() -> anyhow::Result<Option<PathBuf>> {
    let source = std::env::var_os("VGPU_REAL_OLLAMA_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/real-ollama"));
    let setup = source.join("setup.sh");
    if !setup.exists() {
        eprintln!(
            "xtask: no real Ollama at {}: its tests are skipped",
            source.display()
        );
        return Ok(None);
    }
    let dest = target_dir().join("real-ollama");
    exec(Command::new("bash").arg(&setup).arg(&dest))?;
    Ok(Some(dest))
}
