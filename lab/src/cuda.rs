//! The CUDA driver and NVML entry points Ollama's own discovery code calls (era A's
//! gpu_info_nvcuda.c, era C's native probe), resolved by dlsym from whatever file was opened.
use std::ffi::{c_char, c_int, c_uint, c_void};

use crate::dl::{self, Library};

pub type CuResult = c_int;
pub const CUDA_SUCCESS: CuResult = 0;

pub type CuInit = extern "C" fn(c_uint) -> CuResult;
pub type CuIntOut = extern "C" fn(*mut c_int) -> CuResult;
pub type CuDeviceGet = extern "C" fn(*mut c_int, c_int) -> CuResult;
pub type CuAttribute = extern "C" fn(*mut c_int, c_int, c_int) -> CuResult;
pub type CuName = extern "C" fn(*mut c_char, c_int, c_int) -> CuResult;
pub type CuUuid = extern "C" fn(*mut [u8; 16], c_int) -> CuResult;
pub type CuTotalMem = extern "C" fn(*mut usize, c_int) -> CuResult;
pub type CuCtxCreateV3 =
    extern "C" fn(*mut *mut c_void, *mut c_void, c_int, c_uint, c_int) -> CuResult;
pub type CuMemInfo = extern "C" fn(*mut usize, *mut usize) -> CuResult;
pub type CuCtxDestroy = extern "C" fn(*mut c_void) -> CuResult;
pub type CuPciBusId = extern "C" fn(*mut c_char, c_int, c_int) -> CuResult;

pub const ATTR_CC_MAJOR: c_int = 75;
pub const ATTR_CC_MINOR: c_int = 76;
pub const ATTR_INTEGRATED: c_int = 18;

pub type NvmlInit = extern "C" fn() -> c_int;
pub type NvmlString = extern "C" fn(*mut c_char, c_uint) -> c_int;

/// dlsym that fails with the message Ollama's C loaders print.
pub fn require<F: Copy>(lib: &Library, name: &str) -> Result<F, String> {
    // SAFETY: each call site names the symbol with its matching function type.
    unsafe { lib.sym::<F>(name) }.ok_or_else(|| format!("symbol lookup for {name} failed"))
}

pub fn device_name(f: CuName, dev: c_int) -> Result<String, CuResult> {
    let mut buf = [0u8; 256];
    match f(buf.as_mut_ptr().cast(), buf.len() as c_int, dev) {
        CUDA_SUCCESS => Ok(dl::c_buf(&buf)),
        rc => Err(rc),
    }
}

pub fn attribute(f: CuAttribute, attr: c_int, dev: c_int) -> Result<i32, CuResult> {
    let mut value = 0;
    match f(&mut value, attr, dev) {
        CUDA_SUCCESS => Ok(value),
        rc => Err(rc),
    }
}

pub fn int_out(f: CuIntOut) -> Result<i32, CuResult> {
    let mut value = 0;
    match f(&mut value) {
        CUDA_SUCCESS => Ok(value),
        rc => Err(rc),
    }
}
