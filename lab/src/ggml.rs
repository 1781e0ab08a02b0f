//! The ggml backend registry as Ollama's runner compiles it in (ggml-backend-reg.cpp built with
//! -DNDEBUG): for each library dir, every backend name in ggml's probe order; CPU variants are
//! opened, scored and closed in directory order, the best one kept; `libggml-<name>.so` is the
//! fallback. Backends are opened RTLD_NOW | RTLD_LOCAL, asked for `ggml_backend_score` and then
//! `ggml_backend_init`; failures are silent, loaded backends are never closed.
use std::ffi::{c_char, c_int};
use std::path::Path;

use crate::dl::{self, Library, RTLD_LOCAL, RTLD_NOW};

/// ggml's probe order in `ggml_backend_load_all_from_path`.
const BACKENDS: [&str; 12] = [
    "blas", "cann", "cuda", "hip", "metal", "rpc", "sycl", "vulkan", "opencl", "hexagon", "musa",
    "cpu",
];

/// Mirrors `struct ggml_lab_device` in c/ggml-lab.h.
#[repr(C)]
pub struct RawDevice {
    pub id: [u8; 96],
    pub name: [u8; 256],
    pub library: [u8; 16],
    pub total: u64,
    pub free: u64,
    pub cc_major: c_int,
    pub cc_minor: c_int,
    pub driver_major: c_int,
    pub driver_minor: c_int,
}

/// Mirrors `struct ggml_backend_reg` in c/ggml-lab.h.
#[repr(C)]
pub struct RawReg {
    name: *const c_char,
    device_count: extern "C" fn() -> c_int,
    device_get: extern "C" fn(c_int, *mut RawDevice) -> c_int,
}

#[derive(Clone, Debug)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub library: String,
    pub total: u64,
    pub free: u64,
    pub compute: (i32, i32),
    pub driver: (i32, i32),
}

pub struct Backend {
    pub name: String,
    pub path: String,
    reg: &'static RawReg,
}

impl Backend {
    pub fn devices(&self) -> Vec<Device> {
        let count = (self.reg.device_count)();
        (0..count)
            .filter_map(|i| {
                // SAFETY: RawDevice is plain data; the backend fills it or returns non-zero.
                let mut raw: RawDevice = unsafe { std::mem::zeroed() };
                ((self.reg.device_get)(i, &mut raw) == 0).then(|| Device {
                    id: dl::c_buf(&raw.id),
                    name: dl::c_buf(&raw.name),
                    library: dl::c_buf(&raw.library),
                    total: raw.total,
                    free: raw.free,
                    compute: (raw.cc_major, raw.cc_minor),
                    driver: (raw.driver_major, raw.driver_minor),
                })
            })
            .collect()
    }
}

pub fn load_all_from_path(dir: &Path) -> Vec<Backend> {
    BACKENDS
        .iter()
        .filter_map(|name| load_best(name, dir))
        .collect()
}

fn load_best(name: &str, dir: &Path) -> Option<Backend> {
    let prefix = format!("libggml-{name}-");
    // In directory order, as ggml's `fs::directory_iterator` gives them.
    let variants: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
            file.starts_with(&prefix) && file.ends_with(".so")
        })
        .collect();
    let mut best: Option<(i32, String)> = None;
    for path in variants {
        let path = path.to_string_lossy().into_owned();
        let Ok(lib) = Library::open(&path, RTLD_NOW | RTLD_LOCAL) else {
            continue;
        };
        // SAFETY: ggml_backend_score is `int (void)`.
        let score =
            unsafe { lib.sym::<extern "C" fn() -> c_int>("ggml_backend_score") }.map_or(0, |f| f());
        lib.close();
        if score > best.as_ref().map_or(0, |b| b.0) {
            best = Some((score, path));
        }
    }
    let path = match best {
        Some((_, path)) => path,
        None => {
            let base = dir.join(format!("libggml-{name}.so"));
            if !base.exists() {
                return None;
            }
            base.to_string_lossy().into_owned()
        }
    };
    load(&path)
}

fn load(path: &str) -> Option<Backend> {
    let lib = Library::open(path, RTLD_NOW | RTLD_LOCAL).ok()?;
    // SAFETY: ggml_backend_score is `int (void)`; a backend that scores 0 is not for this CPU.
    if unsafe { lib.sym::<extern "C" fn() -> c_int>("ggml_backend_score") }
        .is_some_and(|f| f() == 0)
    {
        lib.close();
        return None;
    }
    // SAFETY: ggml_backend_init is `struct ggml_backend_reg *(void)`.
    let init = unsafe { lib.sym::<extern "C" fn() -> *const RawReg>("ggml_backend_init") }?;
    // SAFETY: a non-null registry lives as long as its library, which is never closed.
    let reg = unsafe { init().as_ref() }?;
    // SAFETY: the registry's name is a static C string.
    let name = unsafe { std::ffi::CStr::from_ptr(reg.name) }
        .to_string_lossy()
        .into_owned();
    eprintln!("load_backend: loaded {name} backend from {path}");
    // `lib` is not closed: ggml keeps every loaded backend for the life of the process.
    Some(Backend {
        name,
        path: path.to_string(),
        reg,
    })
}
