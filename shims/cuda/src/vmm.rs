//! The virtual memory management API (`cuMem*`) that ggml's CUDA pool uses: argument checks
//! here, bookkeeping in `ledger`. This is emulation of the books only: no memory exists behind
//! the handles and addresses, and no kernel can ever run against them.

mod ledger;

use std::ffi::{c_uint, c_ulonglong};
use std::sync::{Mutex, MutexGuard, PoisonError};

use vgpu_shim_common::Config;

use crate::devices;
use crate::ffi::*;
use ledger::{GRANULARITY, Ledger};

/// More access descriptors than any caller could mean (one per device is typical).
const MAX_ACCESS_DESCRIPTORS: usize = 1024;

/// `CUmemAccess_flags`: PROT_NONE, PROT_READ, PROT_READWRITE.
const ACCESS_FLAGS: [c_uint; 3] = [0, 1, 3];

fn ledger() -> MutexGuard<'static, Ledger> {
    static LEDGER: Mutex<Ledger> = Mutex::new(Ledger::new());
    // Each ledger operation validates before it changes anything, so a poisoned lock still
    // guards consistent books.
    LEDGER.lock().unwrap_or_else(PoisonError::into_inner)
}

fn size_in_bytes(size: usize) -> u64 {
    u64::try_from(size).unwrap_or(u64::MAX)
}

/// The CUDA ordinal an allocation property names; it must ask for pinned device memory.
fn allocation_device(config: &Config, prop: &CUmemAllocationProp) -> Outcome<CUdevice> {
    if prop.kind != CU_MEM_ALLOCATION_TYPE_PINNED
        || prop.location.kind != CU_MEM_LOCATION_TYPE_DEVICE
    {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    devices::resolve(config, prop.location.id)?;
    Ok(prop.location.id)
}

/// `cuMemGetAllocationGranularity`; `option` is MINIMUM (0) or RECOMMENDED (1).
pub fn granularity(config: &Config, prop: &CUmemAllocationProp, option: c_uint) -> Outcome<usize> {
    allocation_device(config, prop)?;
    if option > 1 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    usize::try_from(GRANULARITY).map_err(|_| CUDA_ERROR_UNKNOWN)
}

pub fn create(
    config: &Config,
    size: usize,
    prop: &CUmemAllocationProp,
    flags: c_ulonglong,
) -> Outcome<CUmemGenericAllocationHandle> {
    let device = allocation_device(config, prop)?;
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let free_bytes = devices::resolve(config, device)?.free_memory_bytes;
    ledger().create(device, size_in_bytes(size), free_bytes)
}

pub fn release(handle: CUmemGenericAllocationHandle) -> Outcome {
    ledger().release(handle)
}

/// `cuMemAddressReserve`. The address hint is ignored, as the driver may do.
pub fn reserve(size: usize, alignment: usize, flags: c_ulonglong) -> Outcome<CUdeviceptr> {
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    ledger().reserve(size_in_bytes(size), size_in_bytes(alignment))
}

pub fn free(address: CUdeviceptr, size: usize) -> Outcome {
    ledger().free(address, size_in_bytes(size))
}

pub fn map(
    address: CUdeviceptr,
    size: usize,
    offset: usize,
    handle: CUmemGenericAllocationHandle,
    flags: c_ulonglong,
) -> Outcome {
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    ledger().map(address, size_in_bytes(size), size_in_bytes(offset), handle)
}

pub fn unmap(address: CUdeviceptr, size: usize) -> Outcome {
    ledger().unmap(address, size_in_bytes(size))
}

/// `cuMemSetAccess`: each descriptor must name a visible device and a known protection, and
/// the range must be mapped. Access is not recorded; nothing could use it.
pub fn set_access(
    config: &Config,
    address: CUdeviceptr,
    size: usize,
    descriptors: &[CUmemAccessDesc],
) -> Outcome {
    if descriptors.is_empty() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    for descriptor in descriptors {
        if descriptor.location.kind != CU_MEM_LOCATION_TYPE_DEVICE
            || !ACCESS_FLAGS.contains(&descriptor.flags)
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        devices::resolve(config, descriptor.location.id)?;
    }
    ledger().check_mapped(address, size_in_bytes(size))
}

/// The caller's `count` access descriptors at `descriptors`.
///
/// # Safety
/// `descriptors` must be NULL or point to `count` valid descriptors.
pub unsafe fn access_descriptors<'a>(
    descriptors: *const CUmemAccessDesc,
    count: usize,
) -> Outcome<&'a [CUmemAccessDesc]> {
    if descriptors.is_null() || count > MAX_ACCESS_DESCRIPTORS {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-NULL, at most MAX_ACCESS_DESCRIPTORS long, and valid by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(descriptors, count) })
}

/// Bytes that `cuMemCreate` holds on CUDA device `device`; `cuMemGetInfo` reports them as used.
pub fn allocated_on(device: CUdevice) -> u64 {
    ledger().allocated_on(device)
}
