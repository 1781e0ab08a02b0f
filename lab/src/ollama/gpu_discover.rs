//! `ollama gpu-discover --lib-dir <lib/ollama> --lib-dir <lib/ollama/cuda_vNN>` (eras C and D,
//! discover/native_probe_linux.go, the same from v0.30.0 to v0.33.0-rc2): serve starts it with
//! the llama-server children's environment. It loads ggml and the dirs' GPU backends and asks
//! them for their devices; for a CUDA dir it then asks the driver itself (`libcuda.so.1`, else
//! `libcuda.so`: cuInit, cuDriverGetVersion, NVML's driver version, cuDeviceGetCount, and per
//! device cuDeviceGet, three attributes, the name, the memory, the PCI bus id). It prints
//! `{"devices":[...]}` on stdout; when neither found a device and one failed it prints `Error:
//! <why>` on stderr and exits 1, as its cobra command does.
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::cuda::{self, *};
use crate::dl::{self, Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};

/// `nativeProbeDevice`, with its JSON tags (`omitempty` where Go has it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbedDevice {
    pub library: String,
    pub index: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub index_matches_backend: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device_id: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub integrated: bool,
    #[serde(default)]
    pub integrated_known: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_memory: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub free_memory: u64,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub compute_major: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub compute_minor: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub cuda_driver_major: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub cuda_driver_minor: i32,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub nvidia_driver_major: i32,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// `nativeProbeResult`: Go writes a nil slice as `"devices":null`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Probe {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub devices: Vec<ProbedDevice>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ProbedDevice>, D::Error> {
    Ok(Option::<Vec<ProbedDevice>>::deserialize(d)?.unwrap_or_default())
}

pub fn main(args: &[String]) -> anyhow::Result<i32> {
    let lib_dirs: Vec<&str> = args
        .chunks(2)
        .filter(|pair| pair[0] == "--lib-dir")
        .filter_map(|pair| pair.get(1).map(String::as_str))
        .collect();
    match probe(&lib_dirs) {
        Ok(devices) if devices.is_empty() => println!("{{\"devices\":null}}"),
        Ok(devices) => println!("{}", serde_json::to_string(&Probe { devices })?),
        Err(error) => {
            eprintln!("Error: {error}");
            return Ok(1);
        }
    }
    Ok(0)
}

/// `runPlatformNativeProbe`: ggml's devices, supplemented by the driver's for a CUDA dir; an
/// error only when both found nothing.
fn probe(lib_dirs: &[&str]) -> Result<Vec<ProbedDevice>, String> {
    let (ggml, ggml_err) = split(probe_ggml(lib_dirs));
    let (cuda, cuda_err) = if has_cuda(lib_dirs) {
        split(probe_cuda())
    } else {
        (Vec::new(), None)
    };
    let devices = merge(ggml, cuda);
    if !devices.is_empty() {
        return Ok(devices);
    }
    match ggml_err.or(cuda_err) {
        Some(error) => Err(error),
        None => Ok(Vec::new()),
    }
}

fn split(r: Result<Vec<ProbedDevice>, String>) -> (Vec<ProbedDevice>, Option<String>) {
    match r {
        Ok(devices) => (devices, None),
        Err(error) => (Vec::new(), Some(error)),
    }
}

/// `nativeProbeHasCUDA`: a dir whose name says cuda.
fn has_cuda(lib_dirs: &[&str]) -> bool {
    lib_dirs.iter().any(|d| {
        Path::new(d)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().to_lowercase().contains("cuda"))
    })
}

fn dlopen(path: &str, global: bool) -> Result<Library, String> {
    let flags = RTLD_NOW | if global { RTLD_GLOBAL } else { RTLD_LOCAL };
    Library::open(path, flags).map_err(|e| format!("dlopen {path}: {e}"))
}

/// The first of `names` that opens; else every failure, joined as Go joins them.
fn dlopen_first(names: &[&str], global: bool) -> Result<Library, String> {
    let mut errors = Vec::new();
    for name in names {
        match dlopen(name, global) {
            Ok(lib) => return Ok(lib),
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

fn dlsym<F: Copy>(lib: &Library, name: &str) -> Result<F, String> {
    // SAFETY: each call site names the symbol with its matching function type.
    unsafe { lib.sym::<F>(name) }.ok_or_else(|| {
        format!(
            "dlsym {name}: {}",
            vgpu_trace_fixtures::dlerror().unwrap_or_default()
        )
    })
}

/// Mirrors `struct ggml_lab_dev_props` in c/ggml-lab.h.
#[repr(C)]
struct DevProps {
    name: *const c_char,
    description: *const c_char,
    memory_free: usize,
    memory_total: usize,
    kind: c_int,
    device_id: *const c_char,
}

type BackendLoad = extern "C" fn(*const c_char) -> *mut c_void;
type RegDevCount = extern "C" fn(*mut c_void) -> usize;
type RegDevGet = extern "C" fn(*mut c_void, usize) -> *mut c_void;
type RegName = extern "C" fn(*mut c_void) -> *const c_char;
type DevGetProps = extern "C" fn(*mut c_void, *mut DevProps);

fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the backend's strings are NUL-terminated and live as long as its device.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `probeGGMLDevicesLinux`: libggml-base.so and libggml.so from the first dir (RTLD_GLOBAL),
/// ggml_backend_load of every GPU backend file in the dirs, and each one's devices.
fn probe_ggml(lib_dirs: &[&str]) -> Result<Vec<ProbedDevice>, String> {
    let Some(first) = lib_dirs.first() else {
        return Err("no library directories provided".into());
    };
    let file = |name: &str| format!("{}/lib{name}.so", first.trim_end_matches('/'));
    let base = dlopen(&file("ggml-base"), true)?;
    let ggml = dlopen(&file("ggml"), true)?;
    let load: BackendLoad = dlsym(&ggml, "ggml_backend_load")?;
    let dev_count: RegDevCount = dlsym(&base, "ggml_backend_reg_dev_count")?;
    let dev_get: RegDevGet = dlsym(&base, "ggml_backend_reg_dev_get")?;
    let reg_name: RegName = dlsym(&base, "ggml_backend_reg_name")?;
    let dev_props: DevGetProps = dlsym(&base, "ggml_backend_dev_get_props")?;
    let mut devices = Vec::new();
    for dir in lib_dirs {
        for backend in ["cuda", "hip", "vulkan"] {
            let path = Path::new(dir).join(format!("libggml-{backend}.so"));
            if !path.exists() {
                continue;
            }
            let path = CString::new(path.to_string_lossy().as_bytes()).unwrap_or_default();
            let reg = load(path.as_ptr());
            if reg.is_null() {
                continue;
            }
            let library = match c_str(reg_name(reg)).to_lowercase().as_str() {
                "cuda" => "CUDA".to_string(),
                "hip" | "rocm" => "ROCm".into(),
                "vulkan" => "Vulkan".into(),
                other => other.into(),
            };
            for index in 0..dev_count(reg) {
                let dev = dev_get(reg, index);
                if dev.is_null() {
                    continue;
                }
                // SAFETY: DevProps is plain data; the backend fills it.
                let mut props: DevProps = unsafe { std::mem::zeroed() };
                dev_props(dev, &mut props);
                if props.memory_total == 0 {
                    continue;
                }
                devices.push(ProbedDevice {
                    library: library.clone(),
                    index: index as i32,
                    index_matches_backend: true,
                    name: c_str(props.name),
                    description: c_str(props.description),
                    device_id: c_str(props.device_id),
                    integrated: props.kind == 2,
                    integrated_known: props.kind == 1 || props.kind == 2,
                    total_memory: props.memory_total as u64,
                    free_memory: props.memory_free as u64,
                    ..ProbedDevice::default()
                });
            }
        }
    }
    Ok(devices)
}

/// `probeCUDADriverLinux`.
fn probe_cuda() -> Result<Vec<ProbedDevice>, String> {
    let lib = dlopen_first(&["libcuda.so.1", "libcuda.so"], false)?;
    let init: CuInit = dlsym(&lib, "cuInit")?;
    let driver_version: CuIntOut = dlsym(&lib, "cuDriverGetVersion")?;
    let device_count: CuIntOut = dlsym(&lib, "cuDeviceGetCount")?;
    let device_get: CuDeviceGet = dlsym(&lib, "cuDeviceGet")?;
    let attribute: CuAttribute = dlsym(&lib, "cuDeviceGetAttribute")?;
    let name: CuName = dlsym(&lib, "cuDeviceGetName")?;
    let total_mem: CuTotalMem = dlsym(&lib, "cuDeviceTotalMem_v2").or_else(|a: String| {
        dlsym(&lib, "cuDeviceTotalMem").map_err(|b: String| format!("{a}; {b}"))
    })?;
    let pci_bus_id: Option<CuPciBusId> = dlsym(&lib, "cuDeviceGetPCIBusId").ok();
    match init(0) {
        CUDA_SUCCESS => {}
        rc => return Err(format!("cuInit failed: {rc}")),
    }
    let version = cuda::int_out(driver_version).unwrap_or(0);
    let nvidia_major = nvidia_driver_major().unwrap_or(0);
    let count =
        cuda::int_out(device_count).map_err(|rc| format!("cuDeviceGetCount failed: {rc}"))?;
    let mut devices = Vec::new();
    for index in 0..count {
        let mut dev = 0;
        if device_get(&mut dev, index) != CUDA_SUCCESS {
            continue;
        }
        let attr = |a| cuda::attribute(attribute, a, dev).unwrap_or(0);
        let (major, minor, integrated) = (
            attr(ATTR_CC_MAJOR),
            attr(ATTR_CC_MINOR),
            attr(ATTR_INTEGRATED) == 1,
        );
        let mut buf = [0u8; 128];
        name(buf.as_mut_ptr().cast(), buf.len() as c_int, dev);
        let mut total = 0usize;
        total_mem(&mut total, dev);
        let mut pci = String::new();
        if let Some(f) = pci_bus_id {
            let mut bus = [0u8; 32];
            if f(bus.as_mut_ptr().cast(), bus.len() as c_int, dev) == CUDA_SUCCESS {
                pci = dl::c_buf(&bus).to_lowercase();
            }
        }
        devices.push(ProbedDevice {
            library: "CUDA".into(),
            index,
            index_matches_backend: true,
            description: dl::c_buf(&buf),
            device_id: pci,
            integrated,
            integrated_known: true,
            total_memory: total as u64,
            compute_major: major,
            compute_minor: minor,
            cuda_driver_major: version / 1000,
            cuda_driver_minor: version % 1000 / 10,
            nvidia_driver_major: nvidia_major,
            ..ProbedDevice::default()
        });
    }
    Ok(devices)
}

/// `probeNVIDIADriverMajorLinux`: NVML's driver version, between its init and its shutdown.
fn nvidia_driver_major() -> Result<i32, String> {
    let lib = dlopen_first(&["libnvidia-ml.so.1", "libnvidia-ml.so"], false)?;
    let init: NvmlInit = dlsym(&lib, "nvmlInit_v2")?;
    let shutdown: NvmlInit = dlsym(&lib, "nvmlShutdown")?;
    let version: NvmlString = dlsym(&lib, "nvmlSystemGetDriverVersion")?;
    match init() {
        0 => {}
        rc => return Err(format!("nvmlInit_v2 failed: {rc}")),
    }
    let mut buf = [0u8; 80];
    let rc = version(buf.as_mut_ptr().cast(), buf.len() as c_uint);
    shutdown();
    if rc != 0 {
        return Err(format!("nvmlSystemGetDriverVersion failed: {rc}"));
    }
    let text = dl::c_buf(&buf);
    text.trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("parse NVIDIA driver version {text:?}"))
}

/// `mergeNativeProbeDevices`: the driver's devices fill in ggml's; alone, they stand when
/// their index is the backend's.
fn merge(base: Vec<ProbedDevice>, supplement: Vec<ProbedDevice>) -> Vec<ProbedDevice> {
    if base.is_empty() {
        return supplement
            .into_iter()
            .filter(|d| d.index_matches_backend)
            .collect();
    }
    let mut out = base;
    for extra in supplement {
        match out.iter().position(|d| same_device(d, &extra)) {
            Some(i) => fill(&mut out[i], extra),
            None => {
                let taken = out.iter().any(|d| {
                    d.library.eq_ignore_ascii_case(&extra.library) && d.index == extra.index
                });
                if extra.index_matches_backend && !taken {
                    out.push(extra);
                }
            }
        }
    }
    out
}

fn same_device(a: &ProbedDevice, b: &ProbedDevice) -> bool {
    if !a.library.eq_ignore_ascii_case(&b.library) {
        return false;
    }
    if !a.device_id.is_empty() && !b.device_id.is_empty() {
        return a.device_id.eq_ignore_ascii_case(&b.device_id);
    }
    a.index_matches_backend && b.index_matches_backend && a.index == b.index
}

fn fill(dst: &mut ProbedDevice, src: ProbedDevice) {
    dst.index_matches_backend |= src.index_matches_backend;
    if dst.name.is_empty() {
        dst.name = src.name;
    }
    if dst.description.is_empty() {
        dst.description = src.description;
    }
    if dst.device_id.is_empty() {
        dst.device_id = src.device_id;
    }
    if src.integrated_known {
        dst.integrated = src.integrated;
        dst.integrated_known = true;
    } else if !dst.integrated_known && src.integrated {
        dst.integrated = true;
    }
    if dst.total_memory == 0 {
        dst.total_memory = src.total_memory;
    }
    if dst.free_memory == 0 {
        dst.free_memory = src.free_memory;
    }
    if dst.compute_major == 0 && src.compute_major != 0 {
        (dst.compute_major, dst.compute_minor) = (src.compute_major, src.compute_minor);
    }
    if dst.cuda_driver_major == 0 && src.cuda_driver_major != 0 {
        (dst.cuda_driver_major, dst.cuda_driver_minor) =
            (src.cuda_driver_major, src.cuda_driver_minor);
    }
    if dst.nvidia_driver_major == 0 && src.nvidia_driver_major != 0 {
        dst.nvidia_driver_major = src.nvidia_driver_major;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(library: &str, index: i32, id: &str) -> ProbedDevice {
        ProbedDevice {
            library: library.into(),
            index,
            index_matches_backend: true,
            device_id: id.into(),
            ..ProbedDevice::default()
        }
    }

    #[test]
    fn the_driver_fills_in_ggml_and_stands_alone_when_ggml_found_nothing() {
        let mut cuda = dev("CUDA", 0, "0000:01:00.0");
        cuda.compute_major = 9;
        let ggml = ProbedDevice {
            name: "CUDA0".into(),
            ..dev("CUDA", 0, "")
        };
        let merged = merge(vec![ggml], vec![cuda.clone()]);
        assert_eq!(merged.len(), 1);
        assert_eq!(
            (merged[0].name.as_str(), merged[0].compute_major),
            ("CUDA0", 9)
        );
        assert_eq!(merged[0].device_id, "0000:01:00.0");
        assert_eq!(merge(Vec::new(), vec![cuda]).len(), 1);
    }

    #[test]
    fn the_json_is_go_s() {
        let d = ProbedDevice {
            library: "CUDA".into(),
            index_matches_backend: true,
            description: "vGPU H100 80GB".into(),
            integrated_known: true,
            compute_major: 9,
            ..ProbedDevice::default()
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"library":"CUDA","index":0,"index_matches_backend":true,"description":"vGPU H100 80GB","integrated_known":true,"compute_major":9}"#
        );
        let none: Probe = serde_json::from_str(r#"{"devices":null}"#).unwrap();
        assert!(none.devices.is_empty());
    }
}
