//! A discovered GPU, the runner's `/info` schema (`ml.DeviceInfo`), and the closing
//! `inference compute` lines.
use serde::{Deserialize, Serialize};

use super::Era;
use crate::slog::{self, Level, human_bytes};

#[derive(Clone, Debug, PartialEq)]
pub struct Gpu {
    pub id: String,
    pub library: String,
    pub name: String,
    pub description: String,
    pub compute: (i32, i32),
    pub driver: (i32, i32),
    pub pci_id: String,
    pub total: u64,
    pub free: u64,
    /// Library dirs that found it, base names under lib/ (e.g. `ollama`, `cuda_v12`).
    pub libdirs: Vec<String>,
}

/// One element of the JSON array the runner answers `GET /info` with. Go keeps the field names
/// of untagged fields (ComputeMajor, ComputeMinor, LibraryPath).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: String,
    pub backend: String,
    pub name: String,
    pub description: String,
    pub pci_id: String,
    pub total_memory: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub free_memory: u64,
    #[serde(rename = "ComputeMajor")]
    pub compute_major: i32,
    #[serde(rename = "ComputeMinor")]
    pub compute_minor: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub driver_major: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub driver_minor: i32,
    #[serde(rename = "LibraryPath")]
    pub library_path: Vec<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

impl DeviceInfo {
    pub fn into_gpu(self) -> Gpu {
        let libdirs = self
            .library_path
            .iter()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect();
        Gpu {
            id: self.id,
            library: self.backend,
            name: self.name,
            description: self.description,
            compute: (self.compute_major, self.compute_minor),
            driver: (self.driver_major, self.driver_minor),
            pci_id: self.pci_id,
            total: self.total_memory,
            free: self.free_memory,
            libdirs,
        }
    }
}

pub fn pci_id(index: usize) -> String {
    format!("0000:{:02x}:00.0", index + 1)
}

fn system_memory() -> (u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

pub fn log_inference_compute(era: Era, gpus: &[Gpu]) {
    let (total, available) = system_memory();
    if era == Era::A {
        if gpus.is_empty() {
            slog::log(
                Level::Info,
                "types.go:130",
                "inference compute",
                &[
                    ("id", "0".into()),
                    ("library", "cpu".into()),
                    ("variant", String::new()),
                    ("compute", String::new()),
                    ("driver", "0.0".into()),
                    ("name", String::new()),
                    ("total", human_bytes(total)),
                    ("available", human_bytes(available)),
                ],
            );
        }
        for gpu in gpus {
            slog::log(
                Level::Info,
                "types.go:130",
                "inference compute",
                &[
                    ("id", gpu.id.clone()),
                    ("library", "cuda".into()),
                    ("variant", "v12".into()),
                    ("compute", format!("{}.{}", gpu.compute.0, gpu.compute.1)),
                    ("driver", format!("{}.{}", gpu.driver.0, gpu.driver.1)),
                    ("name", gpu.name.clone()),
                    ("total", human_bytes(gpu.total)),
                    ("available", human_bytes(gpu.free)),
                ],
            );
        }
        return;
    }
    // discover/types.go's two lines: v0.13.2 (B), and v0.30.0 through v0.33 (C, D).
    let (gpu_source, cpu_source) = match era {
        Era::B => ("types.go:42", "types.go:60"),
        _ => ("types.go:32", "types.go:50"),
    };
    if gpus.is_empty() {
        slog::log(
            Level::Info,
            cpu_source,
            "inference compute",
            &[
                ("id", "cpu".into()),
                ("library", "cpu".into()),
                ("compute", String::new()),
                ("name", "cpu".into()),
                ("description", "cpu".into()),
                ("libdirs", "ollama".into()),
                ("driver", String::new()),
                ("pci_id", String::new()),
                ("type", String::new()),
                ("total", human_bytes(total)),
                ("available", human_bytes(available)),
            ],
        );
    }
    for gpu in gpus {
        slog::log(
            Level::Info,
            gpu_source,
            "inference compute",
            &[
                ("id", gpu.id.clone()),
                ("filter_id", String::new()),
                ("library", gpu.library.clone()),
                ("compute", format!("{}.{}", gpu.compute.0, gpu.compute.1)),
                ("name", gpu.name.clone()),
                ("description", gpu.description.clone()),
                ("libdirs", gpu.libdirs.join(",")),
                ("driver", format!("{}.{}", gpu.driver.0, gpu.driver.1)),
                ("pci_id", gpu.pci_id.clone()),
                ("type", "discrete".into()),
                ("total", human_bytes(gpu.total)),
                ("available", human_bytes(gpu.free)),
            ],
        );
    }
}
