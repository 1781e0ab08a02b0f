//! C types of NVML that the exports use (layouts as in nvml.h), the `nvmlReturn_t` codes, and
//! helpers for writing results through callers' pointers.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_uint, c_ulonglong, c_void};

use vgpu_shim_common::c_buffer;
pub use vgpu_shim_common::codes::nvml::*;

pub type nvmlReturn_t = u32;
/// Opaque `struct nvmlDevice_st *`.
pub type nvmlDevice_t = *mut c_void;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct nvmlMemory_t {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// An emulated call's result: `Err` holds the `nvmlReturn_t` to return.
pub type Outcome<T = ()> = Result<T, nvmlReturn_t>;

/// Runs an emulated body and turns its outcome into an `nvmlReturn_t`.
pub fn status(body: impl FnOnce() -> Outcome) -> nvmlReturn_t {
    body().err().unwrap_or(NVML_SUCCESS)
}

/// Writes `value` through the caller's out-pointer; NULL is `NVML_ERROR_INVALID_ARGUMENT`.
///
/// # Safety
/// `target` must be NULL or valid for a write of `T`.
pub unsafe fn store<T>(target: *mut T, value: T) -> Outcome {
    if target.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-NULL, and valid by the caller's contract.
    unsafe { target.write(value) };
    Ok(())
}

/// Copies `text` and its NUL into the caller's `length`-byte buffer, or fails with
/// `NVML_ERROR_INSUFFICIENT_SIZE` without writing.
///
/// # Safety
/// `target` must be NULL or valid for writes of `length` bytes.
pub unsafe fn store_text(target: *mut c_char, length: c_uint, text: &str) -> Outcome {
    if target.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    let capacity = usize::try_from(length).unwrap_or(usize::MAX);
    // SAFETY: non-NULL, and `length` bytes are writable by the caller's contract.
    unsafe { c_buffer::write_whole(target, capacity, text.as_bytes()) }
        .map_err(|_| NVML_ERROR_INSUFFICIENT_SIZE)
}
