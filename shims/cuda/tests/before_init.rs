//! What works before `cuInit`. A separate test binary, so no other test has initialised the
//! process-wide driver state yet.

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use vgpu_cuda::ffi::*;
use vgpu_cuda::*;

#[test]
fn only_version_error_strings_and_proc_address_work_before_cu_init() {
    unsafe {
        let mut count: c_int = -1;
        assert_eq!(cuDeviceGetCount(&mut count), CUDA_ERROR_NOT_INITIALIZED);
        assert_eq!(count, -1, "nothing written on failure");
        let mut device: CUdevice = 0;
        assert_eq!(cuDeviceGet(&mut device, 0), CUDA_ERROR_NOT_INITIALIZED);
        let mut value: c_int = 0;
        assert_eq!(
            cuDeviceGetAttribute(&mut value, 75, 0),
            CUDA_ERROR_NOT_INITIALIZED
        );
        let mut context: CUcontext = ptr::null_mut();
        assert_eq!(
            cuCtxCreate_v3(&mut context, ptr::null_mut(), 0, 0, 0),
            CUDA_ERROR_NOT_INITIALIZED
        );
        let (mut free, mut total) = (0_usize, 0_usize);
        assert_eq!(
            cuMemGetInfo_v2(&mut free, &mut total),
            CUDA_ERROR_NOT_INITIALIZED
        );
        assert_eq!(cuMemRelease(1), CUDA_ERROR_NOT_INITIALIZED);

        let mut version: c_int = 0;
        assert_eq!(cuDriverGetVersion(&mut version), CUDA_SUCCESS);
        assert_eq!(version, vgpu_shim_common::Config::get().cuda_version);
        let mut text: *const c_char = ptr::null();
        assert_eq!(
            cuGetErrorString(CUDA_ERROR_NOT_INITIALIZED, &mut text),
            CUDA_SUCCESS
        );
        assert!(!text.is_null());
        let mut pfn: *mut c_void = ptr::null_mut();
        assert_eq!(
            cuGetProcAddress_v2(c"cuInit".as_ptr(), &mut pfn, 13000, 0, ptr::null_mut()),
            CUDA_SUCCESS
        );
        assert!(!pfn.is_null());

        assert_eq!(cuInit(1), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuDeviceGetCount(&mut count), CUDA_ERROR_NOT_INITIALIZED);
        assert_eq!(cuInit(0), CUDA_SUCCESS);
        assert_eq!(cuDeviceGetCount(&mut count), CUDA_SUCCESS);
        assert!(count >= 1);
    }
}
