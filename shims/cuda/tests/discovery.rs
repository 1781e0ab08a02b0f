//! The call sequences GPU discovery makes, through the exported C functions, against the
//! configuration of the test process (the defaults unless VGPU_* variables are set).

use std::ffi::{CStr, c_char, c_int, c_uint};
use std::ptr;

use vgpu_cuda::ffi::*;
use vgpu_cuda::*;
use vgpu_shim_common::{Config, Device};

fn init() -> &'static Config {
    assert_eq!(
        unsafe { cuInit(0) },
        CUDA_SUCCESS,
        "cuInit (is CUDA_VISIBLE_DEVICES hiding every device?)"
    );
    Config::get()
}

fn first_device(config: &Config) -> &Device {
    &config.devices[config.cuda_visible[0]]
}

fn name_with_buffer(len: usize) -> (CUresult, String) {
    let mut buffer = vec![0x7f as c_char; len.max(1)];
    let result =
        unsafe { cuDeviceGetName(buffer.as_mut_ptr(), c_int::try_from(len).unwrap_or(0), 0) };
    let text = unsafe { CStr::from_ptr(buffer.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    (result, text)
}

/// Ollama's discovery child (dlsym'd cuInit … cuCtxDestroy).
#[test]
fn ollama_discovery_sequence() {
    let config = init();
    let expected = first_device(config);
    unsafe {
        let mut version: c_int = 0;
        assert_eq!(cuDriverGetVersion(&mut version), CUDA_SUCCESS);
        assert_eq!(version, config.cuda_version);

        let mut count: c_int = 0;
        assert_eq!(cuDeviceGetCount(&mut count), CUDA_SUCCESS);
        assert_eq!(usize::try_from(count).ok(), Some(config.cuda_visible.len()));

        let mut device: CUdevice = -1;
        assert_eq!(cuDeviceGet(&mut device, 0), CUDA_SUCCESS);
        assert_eq!(device, 0);

        let (mut major, mut minor) = (0, 0);
        assert_eq!(cuDeviceGetAttribute(&mut major, 75, device), CUDA_SUCCESS);
        assert_eq!(cuDeviceGetAttribute(&mut minor, 76, device), CUDA_SUCCESS);
        assert_eq!(
            (major, minor),
            (
                expected.compute_capability.major,
                expected.compute_capability.minor
            )
        );

        let (result, name) = name_with_buffer(100);
        assert_eq!(result, CUDA_SUCCESS);
        assert_eq!(name, expected.name);

        let mut uuid = CUuuid::default();
        assert_eq!(cuDeviceGetUuid(&mut uuid, device), CUDA_SUCCESS);
        assert_eq!(uuid.bytes.map(|b| b as u8), expected.uuid.bytes());

        let mut context: CUcontext = ptr::null_mut();
        assert_eq!(
            cuCtxCreate_v3(&mut context, ptr::null_mut(), 0, 0, device),
            CUDA_SUCCESS
        );
        assert!(!context.is_null());

        let (mut free, mut total) = (0_usize, 0_usize);
        assert_eq!(cuMemGetInfo_v2(&mut free, &mut total), CUDA_SUCCESS);
        assert_eq!(total as u64, expected.total_memory_bytes);
        assert_eq!(free as u64, expected.free_memory_bytes);

        assert_eq!(cuCtxDestroy(context), CUDA_SUCCESS);
        assert_eq!(
            cuMemGetInfo_v2(&mut free, &mut total),
            CUDA_ERROR_INVALID_CONTEXT
        );
    }
}

/// The newer Go discovery: attributes 75, 76, 18, name and total memory by both ABIs.
#[test]
fn integrated_flag_and_total_memory() {
    let expected = first_device(init());
    unsafe {
        let mut integrated = -1;
        assert_eq!(cuDeviceGetAttribute(&mut integrated, 18, 0), CUDA_SUCCESS);
        assert_eq!(integrated, 0);
        let mut bytes = 0_usize;
        assert_eq!(cuDeviceTotalMem_v2(&mut bytes, 0), CUDA_SUCCESS);
        assert_eq!(bytes as u64, expected.total_memory_bytes);
        let mut legacy: c_uint = 0;
        assert_eq!(cuDeviceTotalMem(&mut legacy, 0), CUDA_SUCCESS);
        assert_eq!(
            u64::from(legacy),
            expected.total_memory_bytes.min(u64::from(c_uint::MAX))
        );
    }
}

#[test]
fn bad_arguments() {
    let config = init();
    let past_end = c_int::try_from(config.cuda_visible.len()).unwrap_or(c_int::MAX);
    unsafe {
        let mut value = 0;
        assert_eq!(cuDeviceGet(&mut value, past_end), CUDA_ERROR_INVALID_DEVICE);
        assert_eq!(cuDeviceGet(&mut value, -1), CUDA_ERROR_INVALID_DEVICE);
        assert_eq!(cuDeviceGet(ptr::null_mut(), 0), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(
            cuDeviceGetAttribute(&mut value, 150, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuDeviceGetAttribute(&mut value, 75, past_end),
            CUDA_ERROR_INVALID_DEVICE
        );
        assert_eq!(
            cuDeviceGetAttribute(ptr::null_mut(), 75, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuDeviceGetName(ptr::null_mut(), 10, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuDeviceGetUuid_v2(ptr::null_mut(), 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(
            cuMemGetInfo_v2(ptr::null_mut(), ptr::null_mut()),
            CUDA_ERROR_INVALID_CONTEXT
        );
        assert_eq!(
            cuCtxCreate_v2(ptr::null_mut(), 0, 0),
            CUDA_ERROR_INVALID_VALUE
        );
        assert_eq!(cuCtxDestroy_v2(ptr::null_mut()), CUDA_ERROR_INVALID_VALUE);
    }
    assert_eq!(name_with_buffer(0).0, CUDA_ERROR_INVALID_VALUE);
}

#[test]
fn names_and_bus_ids_are_truncated_to_the_buffer() {
    let expected = first_device(init());
    let (result, name) = name_with_buffer(5);
    assert_eq!(result, CUDA_SUCCESS);
    assert_eq!(name, expected.name.chars().take(4).collect::<String>());

    let mut bus_id = [0 as c_char; 32];
    assert_eq!(
        unsafe { cuDeviceGetPCIBusId(bus_id.as_mut_ptr(), 32, 0) },
        CUDA_SUCCESS
    );
    let bus_id = unsafe { CStr::from_ptr(bus_id.as_ptr()) };
    let pci = expected.pci;
    assert_eq!(
        bus_id.to_str(),
        Ok(format!("{:04x}:{:02x}:{:02x}.0", pci.domain, pci.bus, pci.device).as_str())
    );
}

#[test]
fn contexts_are_current_per_thread() {
    init();
    unsafe {
        let mut context: CUcontext = ptr::null_mut();
        assert_eq!(cuCtxCreate_v2(&mut context, 0, 0), CUDA_SUCCESS);
        let mut current: CUcontext = ptr::null_mut();
        assert_eq!(cuCtxGetCurrent(&mut current), CUDA_SUCCESS);
        assert_eq!(current, context);
        let mut device: CUdevice = -1;
        assert_eq!(cuCtxGetDevice(&mut device), CUDA_SUCCESS);
        assert_eq!(device, 0);

        let address = context as usize;
        std::thread::spawn(move || {
            let mut current: CUcontext = ptr::dangling_mut();
            assert_eq!(cuCtxGetCurrent(&mut current), CUDA_SUCCESS);
            assert!(current.is_null());
            let (mut free, mut total) = (0_usize, 0_usize);
            assert_eq!(
                cuMemGetInfo_v2(&mut free, &mut total),
                CUDA_ERROR_INVALID_CONTEXT
            );
            assert_eq!(cuCtxSetCurrent(address as CUcontext), CUDA_SUCCESS);
            assert_eq!(cuMemGetInfo_v2(&mut free, &mut total), CUDA_SUCCESS);
        })
        .join()
        .expect("second thread");

        assert_eq!(cuCtxDestroy_v2(context), CUDA_SUCCESS);
        assert_eq!(cuCtxSetCurrent(context), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(cuCtxGetDevice(&mut device), CUDA_ERROR_INVALID_CONTEXT);
        assert_eq!(
            cuCtxCreate_v2(&mut context, 0x1000, 0),
            CUDA_ERROR_INVALID_VALUE
        );
    }
}
