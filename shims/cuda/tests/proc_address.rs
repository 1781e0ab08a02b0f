//! `cuGetProcAddress*` as libcudart uses it: the only symbol it dlsyms, then names through it.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;

use vgpu_cuda::ffi::*;
use vgpu_cuda::*;

fn query(symbol: &CStr, version: c_int) -> (CUresult, *mut c_void, CUdriverProcAddressQueryResult) {
    let mut pfn = ptr::dangling_mut::<c_void>();
    let mut status = 99;
    let result = unsafe { cuGetProcAddress_v2(symbol.as_ptr(), &mut pfn, version, 0, &mut status) };
    (result, pfn, status)
}

#[test]
fn shim_exports_are_found() {
    let (result, pfn, status) = query(c"cuDeviceGetCount", 12080);
    assert_eq!(
        (result, status),
        (CUDA_SUCCESS, CU_GET_PROC_ADDRESS_SUCCESS)
    );
    assert_eq!(pfn, cuDeviceGetCount as *const () as *mut c_void);
}

#[test]
fn base_names_get_the_newest_abi() {
    let (result, pfn, _) = query(c"cuMemGetInfo", 12000);
    assert_eq!(result, CUDA_SUCCESS);
    assert_eq!(pfn, cuMemGetInfo_v2 as *const () as *mut c_void);
    let (_, pfn, _) = query(c"cuDeviceTotalMem", 13000);
    assert_eq!(
        pfn, cuDeviceTotalMem_v2 as *const () as *mut c_void,
        "not the 32-bit legacy ABI"
    );
    let (_, pfn, _) = query(c"cuGetProcAddress", 12000);
    assert_eq!(pfn, cuGetProcAddress_v2 as *const () as *mut c_void);
}

#[test]
fn unknown_names_are_not_found() {
    let (result, pfn, status) = query(c"cuLaunchKernel", 12000);
    assert_eq!(
        (result, pfn, status),
        (
            CUDA_ERROR_NOT_FOUND,
            ptr::null_mut(),
            CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
        )
    );
    let (result, pfn, status) = query(c"cuCtxCreate", 3000);
    assert_eq!(
        (result, pfn, status),
        (
            CUDA_ERROR_NOT_FOUND,
            ptr::null_mut(),
            CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
        )
    );
}

#[test]
fn legacy_entry_point_and_null_arguments() {
    let mut pfn = ptr::null_mut();
    assert_eq!(
        unsafe { cuGetProcAddress(c"cuInit".as_ptr(), &mut pfn, 11080, 0) },
        CUDA_SUCCESS
    );
    assert_eq!(pfn, cuInit as *const () as *mut c_void);
    assert_eq!(
        unsafe { cuGetProcAddress(c"cuNope".as_ptr(), &mut pfn, 11080, 0) },
        CUDA_ERROR_NOT_FOUND
    );
    assert!(pfn.is_null());
    assert_eq!(
        unsafe { cuGetProcAddress(ptr::null(), &mut pfn, 11080, 0) },
        CUDA_ERROR_INVALID_VALUE
    );
    let no_out = unsafe {
        cuGetProcAddress_v2(
            c"cuInit".as_ptr(),
            ptr::null_mut(),
            12000,
            0,
            ptr::null_mut(),
        )
    };
    assert_eq!(no_out, CUDA_ERROR_INVALID_VALUE);
    let no_status =
        unsafe { cuGetProcAddress_v2(c"cuInit".as_ptr(), &mut pfn, 12000, 0, ptr::null_mut()) };
    assert_eq!(
        no_status, CUDA_SUCCESS,
        "the status out-parameter is optional"
    );
}

#[test]
fn pointers_returned_are_callable() {
    let (_, pfn, _) = query(c"cuDriverGetVersion", 12000);
    let get_version: unsafe extern "C" fn(*mut c_int) -> CUresult =
        unsafe { std::mem::transmute(pfn) };
    let mut version = 0;
    assert_eq!(unsafe { get_version(&mut version) }, CUDA_SUCCESS);
    assert!(version > 0);
}

#[test]
fn every_export_is_in_the_table() {
    assert_eq!(EMULATED_FUNCTIONS.len(), 32);
    let listed: Vec<&str> = include_str!("../exports.txt")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert_eq!(listed.len(), 674);
    for name in EMULATED_FUNCTIONS {
        assert!(listed.contains(name), "{name} is not a driver function");
    }
    // Generated exports exist on x86_64 Linux only.
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        for name in &listed {
            assert!(exported_function(name.as_bytes()).is_some(), "{name}");
        }
        let generated = FORWARDED_FUNCTIONS.len();
        assert_eq!(EMULATED_FUNCTIONS.len() + generated, listed.len());
    }
}

#[test]
fn export_tables_cannot_be_emulated() {
    let mut table = ptr::dangling::<c_void>();
    let id = CUuuid::default();
    assert_eq!(
        unsafe { cuGetExportTable(&mut table, &id) },
        CUDA_ERROR_NOT_FOUND
    );
    assert!(table.is_null());
}
