//! C types of the CUDA driver API that the exports use (layouts as in cuda.h), the `CUresult`
//! codes, and helpers for writing results through callers' pointers.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulonglong, c_void};

use vgpu_shim_common::c_buffer;
pub use vgpu_shim_common::codes::cuda::*;

pub type CUresult = u32;
/// A CUDA ordinal: an index into the visible devices.
pub type CUdevice = c_int;
/// Opaque `struct CUctx_st *`.
pub type CUcontext = *mut c_void;
pub type CUdeviceptr = c_ulonglong;
pub type CUmemGenericAllocationHandle = c_ulonglong;
pub type CUdriverProcAddressQueryResult = c_uint;

pub const CU_GET_PROC_ADDRESS_SUCCESS: CUdriverProcAddressQueryResult = 0;
pub const CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND: CUdriverProcAddressQueryResult = 1;
pub const CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT: CUdriverProcAddressQueryResult = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CUuuid {
    pub bytes: [c_char; 16],
}

/// `CUexecAffinityParam`: a type and a one-member union (`smCount.val`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUexecAffinityParam {
    pub kind: c_uint,
    pub sm_count: c_uint,
}

pub const CU_MEM_LOCATION_TYPE_DEVICE: c_uint = 1;
pub const CU_MEM_ALLOCATION_TYPE_PINNED: c_uint = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemLocation {
    pub kind: c_uint,
    pub id: c_int,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemAllocationProp {
    pub kind: c_uint,
    pub requested_handle_types: c_uint,
    pub location: CUmemLocation,
    pub win32_handle_meta_data: *mut c_void,
    /// `compressionType`, `gpuDirectRDMACapable`, `usage` (u16), `reserved[4]`.
    pub alloc_flags: [c_uchar; 8],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CUmemAccessDesc {
    pub location: CUmemLocation,
    pub flags: c_uint,
}

/// An emulated call's result: `Err` holds the `CUresult` to return.
pub type Outcome<T = ()> = Result<T, CUresult>;

/// Runs an emulated body and turns its outcome into a `CUresult`.
pub fn status(body: impl FnOnce() -> Outcome) -> CUresult {
    body().err().unwrap_or(CUDA_SUCCESS)
}

/// Writes `value` through the caller's out-pointer; NULL is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `target` must be NULL or valid for a write of `T`.
pub unsafe fn store<T>(target: *mut T, value: T) -> Outcome {
    if target.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-NULL, and valid by the caller's contract.
    unsafe { target.write(value) };
    Ok(())
}

/// Copies `text` into the caller's `len`-byte buffer, truncated and NUL-terminated as the
/// driver does. NULL or a non-positive length is `CUDA_ERROR_INVALID_VALUE`.
///
/// # Safety
/// `target` must be NULL or valid for writes of `len` bytes.
pub unsafe fn store_text(target: *mut c_char, len: c_int, text: &str) -> Outcome {
    let capacity = usize::try_from(len).ok().filter(|&len| len > 0);
    let Some(capacity) = capacity.filter(|_| !target.is_null()) else {
        return Err(CUDA_ERROR_INVALID_VALUE);
    };
    // SAFETY: the caller's contract, checked non-NULL with a positive length.
    unsafe { c_buffer::write_truncated(target, capacity, text.as_bytes()) };
    Ok(())
}
