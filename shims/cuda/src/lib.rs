//! `libcuda.so.1`: the part of the CUDA driver API that GPU discovery (Ollama, libcudart) and
//! ggml's virtual-memory pool use, answered from a virtual GPU, or forwarded to a real driver
//! when `VGPU_CUDA_PASSTHROUGH` names one. Every other driver function is exported too
//! (`exports.txt`): forwarded in pass-through mode, `CUDA_ERROR_NOT_SUPPORTED` otherwise.
//!
//! The emulation keeps books only: contexts and `cuMem*` allocations are handles and numbers,
//! no device memory exists and no kernel can run. `cuGetExportTable` cannot be emulated, so
//! libcudart works only in pass-through mode.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};
use std::ptr;

use vgpu_shim_common::forward::Policy;
use vgpu_shim_common::{Api, Config, PassThrough, export_c_functions};

mod attributes;
mod contexts;
mod devices;
mod errors;
pub mod ffi;
mod proc_address;
mod vmm;

use ffi::*;

/// Where calls go: the emulation, or the library named by `VGPU_CUDA_PASSTHROUGH`.
static PASS_THROUGH: PassThrough = PassThrough::new(Api::Cuda);

/// The generated exports: every driver function of `exports.txt` this file does not define.
static FORWARDING: Policy = Policy {
    pass_through: &PASS_THROUGH,
    not_supported: CUDA_ERROR_NOT_SUPPORTED,
    missing_symbol: CUDA_ERROR_NOT_FOUND,
    internal_error: CUDA_ERROR_UNKNOWN,
};
include!(concat!(env!("OUT_DIR"), "/forwarded.rs"));

/// The address of the export called `name`, hand-written or generated.
pub fn exported_function(name: &[u8]) -> Option<*mut c_void> {
    emulated_function(name).or_else(|| forwarded_function(name))
}

// Every export except cuInit, cuDriverGetVersion, the error strings, cuGetExportTable and
// cuGetProcAddress* needs a successful cuInit first.
use devices::{initialized, initialized_device};

export_c_functions! {
    pass_through: PASS_THROUGH,
    missing_symbol: CUDA_ERROR_NOT_FOUND,
    internal_error: CUDA_ERROR_UNKNOWN,
    forwarded {
        fn cuInit(flags: c_uint) -> CUresult {
            status(|| devices::initialize(Config::get(), flags, PASS_THROUGH.is_unavailable()))
        }
        fn cuDriverGetVersion(driver_version: *mut c_int) -> CUresult {
            status(|| unsafe { store(driver_version, Config::get().cuda_version) })
        }
        fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
            status(|| unsafe { store(count, devices::count(initialized()?)) })
        }
        fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
            status(|| {
                initialized_device(ordinal)?;
                unsafe { store(device, ordinal) }
            })
        }
        fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: CUdevice) -> CUresult {
            status(|| {
                let found = attributes::value(initialized_device(device)?, attribute)?;
                unsafe { store(value, found) }
            })
        }
        fn cuDeviceGetUuid(uuid: *mut CUuuid, device: CUdevice) -> CUresult {
            status(|| unsafe { store(uuid, devices::uuid(initialized_device(device)?)) })
        }
        /// Differs from `cuDeviceGetUuid` only for MIG instances, which the shim has none of.
        fn cuDeviceGetUuid_v2(uuid: *mut CUuuid, device: CUdevice) -> CUresult {
            status(|| unsafe { store(uuid, devices::uuid(initialized_device(device)?)) })
        }
        fn cuDeviceGetName(name: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
            status(|| unsafe { store_text(name, len, &initialized_device(device)?.name) })
        }
        fn cuDeviceTotalMem_v2(bytes: *mut usize, device: CUdevice) -> CUresult {
            status(|| {
                let total = initialized_device(device)?.total_memory_bytes;
                unsafe { store(bytes, size_of_bytes(total)) }
            })
        }
        /// The CUDA 3.1-era ABI with a 32-bit out-parameter; capped at 4 GiB − 1.
        fn cuDeviceTotalMem(bytes: *mut c_uint, device: CUdevice) -> CUresult {
            status(|| {
                let total = devices::legacy_total_memory(initialized_device(device)?);
                unsafe { store(bytes, total) }
            })
        }
        fn cuDeviceGetPCIBusId(pci_bus_id: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
            status(|| {
                let text = devices::pci_bus_id(initialized_device(device)?);
                unsafe { store_text(pci_bus_id, len, &text) }
            })
        }
        fn cuCtxCreate_v2(context: *mut CUcontext, flags: c_uint, device: CUdevice) -> CUresult {
            status(|| unsafe { create_context(context, flags, device) })
        }
        /// Execution-affinity parameters are checked for shape and otherwise ignored.
        fn cuCtxCreate_v3(
            context: *mut CUcontext,
            params: *mut CUexecAffinityParam,
            num_params: c_int,
            flags: c_uint,
            device: CUdevice,
        ) -> CUresult {
            status(|| {
                initialized()?;
                contexts::validate_affinity(params, num_params)?;
                unsafe { create_context(context, flags, device) }
            })
        }
        fn cuCtxDestroy(context: CUcontext) -> CUresult {
            status(|| {
                initialized()?;
                contexts::destroy(context)
            })
        }
        fn cuCtxDestroy_v2(context: CUcontext) -> CUresult {
            status(|| {
                initialized()?;
                contexts::destroy(context)
            })
        }
        fn cuCtxGetCurrent(context: *mut CUcontext) -> CUresult {
            status(|| {
                initialized()?;
                unsafe { store(context, contexts::current()) }
            })
        }
        fn cuCtxSetCurrent(context: CUcontext) -> CUresult {
            status(|| {
                initialized()?;
                contexts::set_current(context)
            })
        }
        fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
            status(|| {
                initialized()?;
                unsafe { store(device, contexts::current_device()?) }
            })
        }
        /// For the current context's device; memory taken by `cuMemCreate` counts as used.
        fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
            status(|| {
                initialized()?;
                let ordinal = contexts::current_device()?;
                let device = initialized_device(ordinal)?;
                let created = vmm::allocated_on(ordinal);
                let free_bytes = device.free_memory_bytes.saturating_sub(created);
                if free.is_null() || total.is_null() {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                unsafe {
                    store(free, size_of_bytes(free_bytes))?;
                    store(total, size_of_bytes(device.total_memory_bytes))
                }
            })
        }
        fn cuGetErrorString(error: CUresult, text: *mut *const c_char) -> CUresult {
            status(|| unsafe { errors::describe(error, text, |code| code.message) })
        }
        fn cuGetErrorName(error: CUresult, text: *mut *const c_char) -> CUresult {
            status(|| unsafe { errors::describe(error, text, |code| code.name) })
        }
        fn cuMemGetAllocationGranularity(
            granularity: *mut usize,
            prop: *const CUmemAllocationProp,
            option: c_uint,
        ) -> CUresult {
            status(|| {
                let config = initialized()?;
                let prop = unsafe { prop.as_ref() }.ok_or(CUDA_ERROR_INVALID_VALUE)?;
                unsafe { store(granularity, vmm::granularity(config, prop, option)?) }
            })
        }
        fn cuMemCreate(
            handle: *mut CUmemGenericAllocationHandle,
            size: usize,
            prop: *const CUmemAllocationProp,
            flags: c_ulonglong,
        ) -> CUresult {
            status(|| {
                let config = initialized()?;
                let prop = unsafe { prop.as_ref() }.ok_or(CUDA_ERROR_INVALID_VALUE)?;
                if handle.is_null() {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                unsafe { store(handle, vmm::create(config, size, prop, flags)?) }
            })
        }
        fn cuMemRelease(handle: CUmemGenericAllocationHandle) -> CUresult {
            status(|| {
                initialized()?;
                vmm::release(handle)
            })
        }
        /// The address hint is ignored, as the driver may do.
        fn cuMemAddressReserve(
            address: *mut CUdeviceptr,
            size: usize,
            alignment: usize,
            hint: CUdeviceptr,
            flags: c_ulonglong,
        ) -> CUresult {
            status(|| {
                initialized()?;
                if address.is_null() {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                unsafe { store(address, vmm::reserve(size, alignment, flags)?) }
            })
        }
        fn cuMemAddressFree(address: CUdeviceptr, size: usize) -> CUresult {
            status(|| {
                initialized()?;
                vmm::free(address, size)
            })
        }
        fn cuMemMap(
            address: CUdeviceptr,
            size: usize,
            offset: usize,
            handle: CUmemGenericAllocationHandle,
            flags: c_ulonglong,
        ) -> CUresult {
            status(|| {
                initialized()?;
                vmm::map(address, size, offset, handle, flags)
            })
        }
        fn cuMemSetAccess(
            address: CUdeviceptr,
            size: usize,
            descriptors: *const CUmemAccessDesc,
            count: usize,
        ) -> CUresult {
            status(|| {
                let config = initialized()?;
                let descriptors = unsafe { vmm::access_descriptors(descriptors, count)? };
                vmm::set_access(config, address, size, descriptors)
            })
        }
        fn cuMemUnmap(address: CUdeviceptr, size: usize) -> CUresult {
            status(|| {
                initialized()?;
                vmm::unmap(address, size)
            })
        }
        /// NVIDIA's private tables (which libcudart needs) cannot be emulated: "not found"
        /// unless passed through. Needs no `cuInit`.
        fn cuGetExportTable(table: *mut *const c_void, table_id: *const CUuuid) -> CUresult {
            if !table.is_null() {
                unsafe { table.write(ptr::null()) };
            }
            CUDA_ERROR_NOT_FOUND
        }
    }
    routed_by_body {
        /// In pass-through mode the real driver answers, with the shim's export of the function
        /// it names, so those calls keep passing through the shim.
        fn cuGetProcAddress_v2(
            symbol: *const c_char,
            pfn: *mut *mut c_void,
            cuda_version: c_int,
            flags: u64,
            symbol_status: *mut CUdriverProcAddressQueryResult,
        ) -> CUresult {
            unsafe {
                proc_address::get_v2(&PASS_THROUGH, symbol, pfn, cuda_version, flags, symbol_status)
            }
        }
        fn cuGetProcAddress(
            symbol: *const c_char,
            pfn: *mut *mut c_void,
            cuda_version: c_int,
            flags: u64,
        ) -> CUresult {
            unsafe { proc_address::get_v1(&PASS_THROUGH, symbol, pfn, cuda_version, flags) }
        }
    }
}

/// A byte count as `size_t`.
fn size_of_bytes(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// `cuCtxCreate_v2/_v3`: the new context becomes current on the calling thread.
///
/// # Safety
/// `context` must be NULL or valid for a write.
unsafe fn create_context(context: *mut CUcontext, flags: c_uint, device: CUdevice) -> Outcome {
    initialized_device(device)?;
    contexts::validate_flags(flags)?;
    if context.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-NULL, and writable by the C caller's contract.
    unsafe { store(context, contexts::create(device)) }
}
