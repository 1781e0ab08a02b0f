//! `ollama gpu-discover --lib-dir <lib/ollama> --lib-dir <lib/ollama/cuda_vNN>` (era C,
//! discover/native_probe_linux.go): loads ggml and the GPU backend, then asks the driver and
//! NVML directly, and prints `{"devices":[...]}` on stdout.
use std::ffi::c_char;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cuda::{self, *};
use crate::dl::{self, Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbedDevice {
    pub library: String,
    pub index: i32,
    pub name: String,
    pub description: String,
    pub device_id: String,
    pub integrated: bool,
    pub integrated_known: bool,
    pub total_memory: u64,
    pub compute_major: i32,
    pub compute_minor: i32,
    pub cuda_driver_major: i32,
    pub cuda_driver_minor: i32,
    pub nvidia_driver_major: i32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Probe {
    pub devices: Vec<ProbedDevice>,
}

type BackendLoad = extern "C" fn(*const c_char) -> *const c_void;
use std::ffi::c_void;

pub fn main(args: &[String]) -> anyhow::Result<i32> {
    let lib_dirs: Vec<&str> = args
        .chunks(2)
        .filter(|pair| pair[0] == "--lib-dir")
        .filter_map(|pair| pair.get(1).map(String::as_str))
        .collect();
    load_ggml(&lib_dirs);
    // The driver and NVML are asked directly only for a CUDA dir.
    let cuda_dir = lib_dirs.iter().skip(1).any(|d| {
        Path::new(d)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("cuda"))
    });
    if !cuda_dir {
        println!("{}", serde_json::to_string(&Probe::default())?);
        return Ok(0);
    }
    let mut probe = Probe {
        devices: probe_cuda().unwrap_or_default(),
    };
    let nvidia_major = nvidia_driver_major();
    for dev in &mut probe.devices {
        dev.nvidia_driver_major = nvidia_major;
    }
    println!("{}", serde_json::to_string(&probe)?);
    Ok(0)
}

fn open_first(names: &[&str], flags: i32) -> Option<Library> {
    names.iter().find_map(|n| Library::open(n, flags).ok())
}

/// libggml-base.so and libggml.so from the first dir (RTLD_GLOBAL), then ggml_backend_load of
/// every GPU backend in the others.
fn load_ggml(lib_dirs: &[&str]) {
    let Some((first, rest)) = lib_dirs.split_first() else {
        return;
    };
    let dir = Path::new(first);
    let _base = Library::open(
        &dir.join("libggml-base.so").to_string_lossy(),
        RTLD_NOW | RTLD_GLOBAL,
    );
    let Ok(ggml) = Library::open(
        &dir.join("libggml.so").to_string_lossy(),
        RTLD_NOW | RTLD_GLOBAL,
    ) else {
        return;
    };
    // SAFETY: ggml_backend_load is `ggml_backend_reg_t (const char *path)`.
    let Some(load) = (unsafe { ggml.sym::<BackendLoad>("ggml_backend_load") }) else {
        return;
    };
    for dir in rest {
        for name in ["cuda", "hip", "vulkan"] {
            let path = Path::new(dir).join(format!("libggml-{name}.so"));
            if path.exists() {
                let c =
                    std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap_or_default();
                load(c.as_ptr());
            }
        }
    }
}

fn probe_cuda() -> Option<Vec<ProbedDevice>> {
    let lib = open_first(&["libcuda.so.1", "libcuda.so"], RTLD_NOW | RTLD_LOCAL)?;
    let init: CuInit = require(&lib, "cuInit").ok()?;
    let driver_version: CuIntOut = require(&lib, "cuDriverGetVersion").ok()?;
    let device_count: CuIntOut = require(&lib, "cuDeviceGetCount").ok()?;
    let device_get: CuDeviceGet = require(&lib, "cuDeviceGet").ok()?;
    let attribute: CuAttribute = require(&lib, "cuDeviceGetAttribute").ok()?;
    let name: CuName = require(&lib, "cuDeviceGetName").ok()?;
    let total_mem: CuTotalMem = require(&lib, "cuDeviceTotalMem_v2")
        .or_else(|_| require(&lib, "cuDeviceTotalMem"))
        .ok()?;
    let pci_bus_id: Option<CuPciBusId> = require(&lib, "cuDeviceGetPCIBusId").ok();
    if init(0) != CUDA_SUCCESS {
        return None;
    }
    let version = cuda::int_out(driver_version).unwrap_or(0);
    let count = cuda::int_out(device_count).ok()?;
    let mut devices = Vec::new();
    for index in 0..count {
        let mut dev = 0;
        if device_get(&mut dev, index) != CUDA_SUCCESS {
            continue;
        }
        let mut total = 0usize;
        total_mem(&mut total, dev);
        let mut bus = [0u8; 32];
        if let Some(f) = pci_bus_id {
            f(bus.as_mut_ptr().cast(), bus.len() as i32, dev);
        }
        let integrated = cuda::attribute(attribute, ATTR_INTEGRATED, dev);
        devices.push(ProbedDevice {
            library: "CUDA".into(),
            index,
            name: format!("CUDA{index}"),
            description: cuda::device_name(name, dev).unwrap_or_default(),
            device_id: dl::c_buf(&bus),
            integrated: integrated == Ok(1),
            integrated_known: integrated.is_ok(),
            total_memory: total as u64,
            compute_major: cuda::attribute(attribute, ATTR_CC_MAJOR, dev).unwrap_or(0),
            compute_minor: cuda::attribute(attribute, ATTR_CC_MINOR, dev).unwrap_or(0),
            cuda_driver_major: version / 1000,
            cuda_driver_minor: version % 1000 / 10,
            nvidia_driver_major: 0,
        });
    }
    Some(devices)
}

/// NVIDIA driver major version from NVML (0 when NVML is missing or fails).
fn nvidia_driver_major() -> i32 {
    let Some(lib) = open_first(
        &["libnvidia-ml.so.1", "libnvidia-ml.so"],
        RTLD_NOW | RTLD_LOCAL,
    ) else {
        return 0;
    };
    let (Ok(init), Ok(version), Ok(shutdown)) = (
        require::<NvmlInit>(&lib, "nvmlInit_v2"),
        require::<NvmlString>(&lib, "nvmlSystemGetDriverVersion"),
        require::<NvmlInit>(&lib, "nvmlShutdown"),
    ) else {
        return 0;
    };
    if init() != 0 {
        return 0;
    }
    let mut buf = [0u8; 80];
    let major = if version(buf.as_mut_ptr().cast(), buf.len() as u32) == 0 {
        dl::c_buf(&buf)
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    shutdown();
    major
}
