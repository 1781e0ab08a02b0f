//! The `cuMem*` sequence of ggml's CUDA virtual-memory pool, through the exported functions.

use std::ptr;

use vgpu_cuda::ffi::*;
use vgpu_cuda::*;

const MIB: usize = 1 << 20;

fn device_prop(ordinal: CUdevice) -> CUmemAllocationProp {
    CUmemAllocationProp {
        kind: CU_MEM_ALLOCATION_TYPE_PINNED,
        requested_handle_types: 0,
        location: CUmemLocation {
            kind: CU_MEM_LOCATION_TYPE_DEVICE,
            id: ordinal,
        },
        win32_handle_meta_data: ptr::null_mut(),
        alloc_flags: [0; 8],
    }
}

#[test]
fn ggml_pool_grows_and_shrinks() {
    assert_eq!(unsafe { cuInit(0) }, CUDA_SUCCESS);
    let prop = device_prop(0);
    unsafe {
        let mut supported = 0;
        assert_eq!(cuDeviceGetAttribute(&mut supported, 102, 0), CUDA_SUCCESS);
        assert_eq!(supported, 1, "VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED");

        let mut granularity = 0;
        assert_eq!(
            cuMemGetAllocationGranularity(&mut granularity, &prop, 1),
            CUDA_SUCCESS
        );
        assert_eq!(granularity, 2 * MIB);

        let mut base: CUdeviceptr = 0;
        assert_eq!(
            cuMemAddressReserve(&mut base, 1024 * MIB, 0, 0, 0),
            CUDA_SUCCESS
        );
        assert_ne!(base, 0);

        let mut handle: CUmemGenericAllocationHandle = 0;
        assert_eq!(cuMemCreate(&mut handle, 64 * MIB, &prop, 0), CUDA_SUCCESS);
        assert_eq!(cuMemMap(base, 64 * MIB, 0, handle, 0), CUDA_SUCCESS);
        let access = CUmemAccessDesc {
            location: prop.location,
            flags: 3,
        };
        assert_eq!(cuMemSetAccess(base, 64 * MIB, &access, 1), CUDA_SUCCESS);

        assert_eq!(cuMemUnmap(base, 64 * MIB), CUDA_SUCCESS);
        assert_eq!(cuMemRelease(handle), CUDA_SUCCESS);
        assert_eq!(cuMemAddressFree(base, 1024 * MIB), CUDA_SUCCESS);
    }
}

#[test]
fn invalid_requests_are_refused() {
    assert_eq!(unsafe { cuInit(0) }, CUDA_SUCCESS);
    let prop = device_prop(0);
    unsafe {
        let mut handle: CUmemGenericAllocationHandle = 0;
        assert_eq!(
            cuMemCreate(&mut handle, MIB, &prop, 0),
            CUDA_ERROR_INVALID_VALUE,
            "not granular"
        );
        assert_eq!(
            cuMemCreate(&mut handle, 2 * MIB, ptr::null(), 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemCreate(ptr::null_mut(), 2 * MIB, &prop, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemCreate(&mut handle, 2 * MIB, &device_prop(999), 0),
            CUDA_ERROR_INVALID_DEVICE
        );
        let mut granularity = 0;
        assert_eq!(
            cuMemGetAllocationGranularity(&mut granularity, &prop, 7),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemMap(0x1000, 2 * MIB, 0, 0xdead, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuMemUnmap(0, 2 * MIB), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(
            cuMemSetAccess(0, 2 * MIB, ptr::null(), 1),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuMemRelease(0xdead), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(cuMemAddressFree(0x1000, 2 * MIB), CUDA_ERROR_INVALID_VALUE);
    }
}
