//! `libnvidia-ml.so.1`: the part of NVML that GPU discovery (Ollama, pynvml) uses, answered from
//! a virtual GPU, or forwarded to a real NVML when `VGPU_NVML_PASSTHROUGH` names one.
//!
//! NVML sees every configured device; unlike the CUDA shim it ignores `CUDA_VISIBLE_DEVICES`,
//! as the real library does. Every other NVML function is exported too (`exports.txt`):
//! forwarded in pass-through mode, `NVML_ERROR_NOT_SUPPORTED` otherwise.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use vgpu_shim_common::codes::{self, nvml};
use vgpu_shim_common::export::{guard, hang_forever, real_function};
use vgpu_shim_common::forward::Policy;
use vgpu_shim_common::{Api, Backend, Config, FailAction, PassThrough, export_c_functions};

mod devices;
pub mod ffi;
mod library;

use devices::initialized_device;
use ffi::*;
use library::initialized;

/// Where calls go: the emulation, or the library named by `VGPU_NVML_PASSTHROUGH`.
static PASS_THROUGH: PassThrough = PassThrough::new(Api::Nvml);

/// The generated exports: every NVML function of `exports.txt` this file does not define. All
/// of them return an `nvmlReturn_t` (only `nvmlErrorString` does not, and it is defined here).
static FORWARDING: Policy = Policy {
    pass_through: &PASS_THROUGH,
    not_supported: NVML_ERROR_NOT_SUPPORTED,
    missing_symbol: NVML_ERROR_FUNCTION_NOT_FOUND,
    internal_error: NVML_ERROR_UNKNOWN,
};
include!(concat!(env!("OUT_DIR"), "/forwarded.rs"));

/// The address of the export called `name`, hand-written or generated.
pub fn exported_function(name: &[u8]) -> Option<*mut c_void> {
    if name == b"nvmlErrorString" {
        return Some(nvmlErrorString as *const () as *mut c_void);
    }
    emulated_function(name).or_else(|| forwarded_function(name))
}

export_c_functions! {
    pass_through: PASS_THROUGH,
    missing_symbol: NVML_ERROR_FUNCTION_NOT_FOUND,
    internal_error: NVML_ERROR_UNKNOWN,
    forwarded {
        /// The pre-v2 entry point; the emulation has nothing to set apart from `nvmlInit_v2`.
        fn nvmlInit() -> nvmlReturn_t {
            status(|| library::init(PASS_THROUGH.is_unavailable()))
        }
        fn nvmlInit_v2() -> nvmlReturn_t {
            status(|| library::init(PASS_THROUGH.is_unavailable()))
        }
        /// pynvml calls it with 0. The flags (NO_GPUS, NO_ATTACH) change nothing here.
        fn nvmlInitWithFlags(flags: c_uint) -> nvmlReturn_t {
            status(|| library::init(PASS_THROUGH.is_unavailable()))
        }
        fn nvmlShutdown() -> nvmlReturn_t {
            status(library::shutdown)
        }
        fn nvmlDeviceGetCount(device_count: *mut c_uint) -> nvmlReturn_t {
            status(|| unsafe { store(device_count, device_total(initialized()?)) })
        }
        fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) -> nvmlReturn_t {
            status(|| unsafe { store(device_count, device_total(initialized()?)) })
        }
        fn nvmlDeviceGetHandleByIndex(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
            status(|| unsafe { store(device, handle_by_index(index)?) })
        }
        fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
            status(|| unsafe { store(device, handle_by_index(index)?) })
        }
        fn nvmlDeviceGetHandleByUUID(
            uuid: *const c_char,
            device: *mut nvmlDevice_t,
        ) -> nvmlReturn_t {
            status(|| {
                let config = initialized()?;
                if uuid.is_null() {
                    return Err(NVML_ERROR_INVALID_ARGUMENT);
                }
                let uuid = unsafe { CStr::from_ptr(uuid) }.to_bytes();
                unsafe { store(device, devices::handle_by_uuid(config, uuid)?) }
            })
        }
        fn nvmlDeviceGetMemoryInfo(
            device: nvmlDevice_t,
            memory: *mut nvmlMemory_t,
        ) -> nvmlReturn_t {
            status(|| unsafe { store(memory, devices::memory(initialized_device(device)?)) })
        }
        fn nvmlDeviceGetName(
            device: nvmlDevice_t,
            name: *mut c_char,
            length: c_uint,
        ) -> nvmlReturn_t {
            status(|| unsafe { store_text(name, length, &initialized_device(device)?.name) })
        }
        fn nvmlDeviceGetUUID(
            device: nvmlDevice_t,
            uuid: *mut c_char,
            length: c_uint,
        ) -> nvmlReturn_t {
            status(|| {
                let text = initialized_device(device)?.uuid.to_string();
                unsafe { store_text(uuid, length, &text) }
            })
        }
        fn nvmlDeviceGetCudaComputeCapability(
            device: nvmlDevice_t,
            major: *mut c_int,
            minor: *mut c_int,
        ) -> nvmlReturn_t {
            status(|| {
                let capability = initialized_device(device)?.compute_capability;
                if major.is_null() || minor.is_null() {
                    return Err(NVML_ERROR_INVALID_ARGUMENT);
                }
                unsafe {
                    store(major, capability.major)?;
                    store(minor, capability.minor)
                }
            })
        }
        fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
            status(|| unsafe { store_text(version, length, &initialized()?.driver_version) })
        }
        fn nvmlSystemGetCudaDriverVersion(cuda_driver_version: *mut c_int) -> nvmlReturn_t {
            status(|| unsafe { store(cuda_driver_version, initialized()?.cuda_version) })
        }
        fn nvmlSystemGetCudaDriverVersion_v2(cuda_driver_version: *mut c_int) -> nvmlReturn_t {
            status(|| unsafe { store(cuda_driver_version, initialized()?.cuda_version) })
        }
    }
    routed_by_body {}
}

fn device_total(config: &Config) -> c_uint {
    c_uint::try_from(config.devices.len()).unwrap_or(c_uint::MAX)
}

fn handle_by_index(index: c_uint) -> Outcome<nvmlDevice_t> {
    let config = initialized()?;
    devices::handle_by_index(config, usize::try_from(index).unwrap_or(usize::MAX))
}

/// `nvmlErrorString` returns a string rather than a status, so it stands outside the export
/// macro: `VGPU_FAIL=nvmlErrorString=hang` applies, a status code cannot. Works without init.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    type Real = unsafe extern "C" fn(nvmlReturn_t) -> *const c_char;
    static REAL: OnceLock<Option<Real>> = OnceLock::new();
    let unknown = c"Unknown Error".as_ptr();
    guard(unknown, || {
        if Config::get().fail.action_for("nvmlErrorString") == Some(FailAction::Hang) {
            hang_forever();
        }
        if let Backend::Real(library) = PASS_THROUGH.backend() {
            // SAFETY: the real NVML's nvmlErrorString has this signature.
            let real = REAL.get_or_init(|| unsafe { real_function(library, "nvmlErrorString\0") });
            if let Some(real) = real {
                // SAFETY: the caller's argument, passed on untouched.
                return unsafe { real(result) };
            }
        }
        codes::find(nvml::TABLE, result).map_or(unknown, |code| code.message.as_ptr())
    })
}
