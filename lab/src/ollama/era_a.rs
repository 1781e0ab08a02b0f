//! Era A (up to v0.12.3): discovery inside `ollama serve` (cgo, gpu_info_nvcuda.c). Candidate
//! files come from lib/ollama, each LD_LIBRARY_PATH dir and fixed globs; each is resolved to its
//! final file and dlopened RTLD_LAZY by that real path (ld.so.cache is never consulted). The
//! first library that reports devices wins; it is dlclosed at the end of the pass.
use std::collections::HashSet;
use std::ffi::c_void;
use std::path::PathBuf;

use super::Install;
use super::device::{Gpu, pci_id};
use crate::cuda::{self, *};
use crate::dl::{Library, RTLD_LAZY, format_uuid};
use crate::glob::glob;
use crate::slog::{self, Level};

const LIBCUDA_GLOBS: [&str; 9] = [
    "/usr/local/cuda*/targets/*/lib/libcuda.so*",
    "/usr/lib/*-linux-gnu/nvidia/current/libcuda.so*",
    "/usr/lib/*-linux-gnu/libcuda.so*",
    "/usr/lib/wsl/lib/libcuda.so*",
    "/usr/lib/wsl/drivers/*/libcuda.so*",
    "/opt/cuda/lib*/libcuda.so*",
    "/usr/local/cuda/lib*/libcuda.so*",
    "/usr/lib*/libcuda.so*",
    "/usr/local/lib*/libcuda.so*",
];

const LIBCUDART_GLOBS: [&str; 3] = [
    "/usr/local/cuda/lib64/libcudart.so*",
    "/usr/lib/*-linux-gnu/libcudart.so*",
    "/usr/local/lib*/libcudart.so*",
];

/// The cudart symbols gpu_info_cudart.c resolves; the lab's cudart stand-in lacks most of them.
const CUDART_SYMBOLS: [&str; 8] = [
    "cudaSetDevice",
    "cudaDeviceSynchronize",
    "cudaDeviceReset",
    "cudaMemGetInfo",
    "cudaGetDeviceCount",
    "cudaDeviceGetAttribute",
    "cudaDriverGetVersion",
    "cudaGetDeviceProperties",
];

/// Every existing file the patterns name, symlinks resolved, first occurrence kept:
/// `first` (lib/ollama patterns), then each LD_LIBRARY_PATH dir, then the fixed globs.
fn candidates(first: &str, name: &str, globs: &[&str]) -> Vec<PathBuf> {
    let root = std::env::var("VGPU_LAB_ROOT").unwrap_or_default();
    let mut patterns = vec![first.to_string()];
    for dir in std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
    {
        patterns.push(format!("{dir}/{name}*"));
    }
    patterns.extend(globs.iter().map(|g| format!("{root}{g}")));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pattern in patterns {
        slog::log(
            Level::Debug,
            "gpu.go:505",
            "gpu library search",
            &[("globs", format!("[{pattern}]"))],
        );
        for path in glob(&pattern) {
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if seen.insert(real.clone()) {
                out.push(real);
            }
        }
    }
    out
}

pub fn discover(install: &Install) -> Vec<Gpu> {
    slog::log(
        Level::Info,
        "gpu.go:217",
        "looking for compatible GPUs",
        &[],
    );
    let first = install
        .lib_ollama
        .join("libcuda.so*")
        .to_string_lossy()
        .into_owned();
    for path in candidates(&first, "libcuda.so", &LIBCUDA_GLOBS) {
        let path = path.to_string_lossy().into_owned();
        match nvcuda_pass(&path) {
            Ok(gpus) if !gpus.is_empty() => {
                slog::log(
                    Level::Debug,
                    "gpu.go:125",
                    "detected GPUs",
                    &[("count", gpus.len().to_string()), ("library", path.clone())],
                );
                return gpus;
            }
            Ok(_) => {}
            Err(error) => slog::log(
                Level::Debug,
                "gpu.go:568",
                "Unable to load nvcuda",
                &[("library", path.clone()), ("error", error)],
            ),
        }
    }
    cudart_fallback(install);
    slog::log(
        Level::Info,
        "gpu.go:396",
        "no compatible GPUs were discovered",
        &[],
    );
    Vec::new()
}

/// Without a working libcuda, Ollama tries libcudart: bundled copies first.
fn cudart_fallback(install: &Install) {
    let first = install
        .lib_ollama
        .join("cuda_v*/libcudart.so*")
        .to_string_lossy()
        .into_owned();
    for path in candidates(&first, "libcudart.so", &LIBCUDART_GLOBS) {
        let path = path.to_string_lossy().into_owned();
        let result = Library::open(&path, RTLD_LAZY).and_then(|lib| {
            // SAFETY: only presence is checked; nothing is called through these pointers.
            let missing = CUDART_SYMBOLS
                .iter()
                .find(|s| unsafe { lib.sym::<usize>(s) }.is_none());
            lib.close();
            missing.map_or(Ok(()), |s| Err(format!("symbol lookup for {s} failed")))
        });
        if let Err(error) = result {
            slog::log(
                Level::Debug,
                "gpu.go:568",
                "Unable to load cudart library",
                &[("library", path), ("error", error)],
            );
        }
    }
}

struct NvCuda {
    init: CuInit,
    driver_version: CuIntOut,
    device_count: CuIntOut,
    device_get: CuDeviceGet,
    attribute: CuAttribute,
    uuid: CuUuid,
    name: CuName,
    ctx_create: CuCtxCreateV3,
    mem_info: CuMemInfo,
    ctx_destroy: CuCtxDestroy,
}

/// nvcuda_init + per-device queries + nvcuda_release (dlclose).
fn nvcuda_pass(path: &str) -> Result<Vec<Gpu>, String> {
    let lib = Library::open(path, RTLD_LAZY)?;
    let result = query(&lib);
    lib.close();
    result
}

fn query(lib: &Library) -> Result<Vec<Gpu>, String> {
    // The whole symbol list is resolved up front, in this order, before any call.
    let api = NvCuda {
        init: require(lib, "cuInit")?,
        driver_version: require(lib, "cuDriverGetVersion")?,
        device_count: require(lib, "cuDeviceGetCount")?,
        device_get: require(lib, "cuDeviceGet")?,
        attribute: require(lib, "cuDeviceGetAttribute")?,
        uuid: require(lib, "cuDeviceGetUuid")?,
        name: require(lib, "cuDeviceGetName")?,
        ctx_create: require(lib, "cuCtxCreate_v3")?,
        mem_info: require(lib, "cuMemGetInfo_v2")?,
        ctx_destroy: require(lib, "cuCtxDestroy")?,
    };
    match (api.init)(0) {
        CUDA_SUCCESS => {}
        100 => return Err("no nvidia devices detected by library".into()),
        999 => return Err("unknown error initializing cuda driver library".into()),
        rc => return Err(format!("cuda driver library init failure: {rc}")),
    }
    let version = cuda::int_out(api.driver_version).unwrap_or(0);
    let count = cuda::int_out(api.device_count)
        .map_err(|rc| format!("unable to get device count: {rc}"))?;
    let mut gpus = Vec::new();
    for index in 0..count {
        let mut dev = 0;
        if (api.device_get)(&mut dev, index) != CUDA_SUCCESS {
            continue;
        }
        let major = cuda::attribute(api.attribute, ATTR_CC_MAJOR, dev).unwrap_or(0);
        let minor = cuda::attribute(api.attribute, ATTR_CC_MINOR, dev).unwrap_or(0);
        let mut uuid = [0u8; 16];
        (api.uuid)(&mut uuid, dev);
        let name = cuda::device_name(api.name, dev).unwrap_or_default();
        let mut ctx: *mut c_void = std::ptr::null_mut();
        let (mut free, mut total) = (0usize, 0usize);
        if (api.ctx_create)(&mut ctx, std::ptr::null_mut(), 0, 0, dev) == CUDA_SUCCESS {
            (api.mem_info)(&mut free, &mut total);
            (api.ctx_destroy)(ctx);
        }
        if major < 5 {
            slog::log(
                Level::Info,
                "gpu.go:295",
                "CUDA GPU is too old. Compute Capability detected",
                &[("compute", format!("{major}.{minor}"))],
            );
            continue;
        }
        gpus.push(Gpu {
            id: format_uuid(&uuid),
            library: "cuda".into(),
            description: name.clone(),
            name,
            compute: (major, minor),
            driver: (version / 1000, version % 1000 / 10),
            pci_id: pci_id(index as usize),
            total: total as u64,
            free: free as u64,
            libdirs: Vec::new(),
        });
    }
    Ok(gpus)
}
