//! MLX at start (v0.16+, `x/mlxrunner/mlx/dynamic.go`): an init() in every `ollama` process
//! dlopens `lib/ollama/mlx_*/libmlxc.so` (`RTLD_LAZY | RTLD_GLOBAL`). Where MLX's CUDA build is
//! shipped (the Docker image), its DT_NEEDED libcuda.so.1 maps the driver, or the shim, into
//! serve itself. On success the dir goes in front of LD_LIBRARY_PATH, which children inherit.
use std::path::PathBuf;

use super::Install;
use crate::dl::{Library, RTLD_GLOBAL, RTLD_LAZY};

pub fn load(install: &Install) {
    let Ok(entries) = std::fs::read_dir(&install.lib_ollama) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mlx_"))
        .map(|e| e.path())
        .filter(|d| d.join("libmlxc.so").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let lib = dir.join("libmlxc.so");
        // Kept open for the life of the process, as Ollama keeps it.
        if Library::open(&lib.to_string_lossy(), RTLD_LAZY | RTLD_GLOBAL).is_ok() {
            let dir = dir.to_string_lossy().into_owned();
            let path = super::child::library_path(&[dir]);
            // SAFETY: called first thing in main, before this process starts any thread.
            unsafe { std::env::set_var("LD_LIBRARY_PATH", path) };
            return;
        }
    }
}
