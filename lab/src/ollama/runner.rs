//! `ollama runner --ollama-engine --port P`: on the first `GET /info` it loads ggml's backends
//! from each OLLAMA_LIBRARY_PATH dir (`ggml.OnceLoad`) and answers with the devices found.
use std::net::TcpListener;
use std::path::Path;

use anyhow::Context as _;

use super::Install;
use super::device::{DeviceInfo, pci_id};
use crate::ggml;
use crate::http;
use crate::slog::{self, Level};

pub fn main(install: &Install, args: &[String]) -> anyhow::Result<i32> {
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .context("runner needs --port")?;
    slog::log(Level::Info, "runner.go:1250", "starting ollama engine", &[]);
    let listener =
        TcpListener::bind(format!("127.0.0.1:{port}")).context("runner cannot listen")?;
    slog::log(
        Level::Info,
        "runner.go:1286",
        "Server listening",
        &[("addr", format!("127.0.0.1:{port}"))],
    );
    let mut devices: Option<String> = None;
    http::serve(listener, |path| {
        (path == "/info").then(|| devices.get_or_insert_with(|| info(install)).clone())
    })
}

fn info(install: &Install) -> String {
    let library_path: Vec<String> = std::env::var("OLLAMA_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    let exe_dir = install
        .exe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut devices = Vec::new();
    for dir in &library_path {
        // OnceLoad skips dirs that are neither the executable's nor under lib/ollama.
        if Path::new(dir) != exe_dir && !dir.contains("lib/ollama") {
            continue;
        }
        for backend in ggml::load_all_from_path(Path::new(dir)) {
            if backend.name == "CPU" {
                continue;
            }
            for (index, dev) in backend.devices().into_iter().enumerate() {
                devices.push(DeviceInfo {
                    id: dev.id,
                    backend: dev.library,
                    name: format!("{}{index}", backend.name),
                    description: dev.name,
                    pci_id: pci_id(index),
                    total_memory: dev.total,
                    free_memory: dev.free,
                    compute_major: dev.compute.0,
                    compute_minor: dev.compute.1,
                    driver_major: dev.driver.0,
                    driver_minor: dev.driver.1,
                    library_path: library_path.clone(),
                });
            }
        }
    }
    serde_json::to_string(&devices).unwrap_or_else(|_| "[]".into())
}
