//! NVML through the exported C functions, against the test process's configuration (the
//! defaults unless VGPU_* variables are set). Init is process-wide and reference-counted, so
//! every test holds `SERIAL` and leaves the count where it found it (zero).

use std::ffi::{CStr, c_char, c_uint};
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vgpu_nvml::ffi::*;
use vgpu_nvml::*;
use vgpu_shim_common::Config;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `body` between nvmlInit_v2 and nvmlShutdown.
fn initialized(body: impl FnOnce(&'static Config)) {
    let _serial = serial();
    assert_eq!(unsafe { nvmlInit_v2() }, NVML_SUCCESS);
    body(Config::get());
    assert_eq!(unsafe { nvmlShutdown() }, NVML_SUCCESS);
}

fn text(
    read: impl FnOnce(*mut c_char, c_uint) -> nvmlReturn_t,
    length: c_uint,
) -> (nvmlReturn_t, String) {
    let mut buffer = [0x7f as c_char; 128];
    buffer[0] = 0;
    let result = read(buffer.as_mut_ptr(), length);
    (
        result,
        unsafe { CStr::from_ptr(buffer.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn handle(index: c_uint) -> nvmlDevice_t {
    let mut device = ptr::null_mut();
    assert_eq!(
        unsafe { nvmlDeviceGetHandleByIndex_v2(index, &mut device) },
        NVML_SUCCESS
    );
    device
}

#[test]
fn init_is_reference_counted() {
    let _serial = serial();
    let mut count = 0;
    unsafe {
        assert_eq!(nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
        assert_eq!(nvmlDeviceGetCount_v2(&mut count), NVML_ERROR_UNINITIALIZED);
        assert_eq!(nvmlInit_v2(), NVML_SUCCESS);
        assert_eq!(nvmlInitWithFlags(0), NVML_SUCCESS);
        assert_eq!(nvmlShutdown(), NVML_SUCCESS);
        assert_eq!(
            nvmlDeviceGetCount_v2(&mut count),
            NVML_SUCCESS,
            "one init still outstanding"
        );
        assert_eq!(nvmlShutdown(), NVML_SUCCESS);
        assert_eq!(nvmlDeviceGetCount_v2(&mut count), NVML_ERROR_UNINITIALIZED);
        assert_eq!(nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
        assert_eq!(nvmlInit(), NVML_SUCCESS);
        assert_eq!(nvmlShutdown(), NVML_SUCCESS);
    }
}

/// Ollama's NVML path: init, handle by UUID, memory, name, shutdown.
#[test]
fn ollama_sequence_by_uuid() {
    initialized(|config| unsafe {
        let expected = &config.devices[0];
        let uuid = std::ffi::CString::new(expected.uuid.to_string()).expect("uuid");
        let mut device = ptr::null_mut();
        assert_eq!(
            nvmlDeviceGetHandleByUUID(uuid.as_ptr(), &mut device),
            NVML_SUCCESS
        );
        assert_eq!(device, handle(0), "handles are stable");

        let mut memory = nvmlMemory_t::default();
        assert_eq!(nvmlDeviceGetMemoryInfo(device, &mut memory), NVML_SUCCESS);
        assert_eq!(memory.total, expected.total_memory_bytes);
        assert_eq!(memory.free, expected.free_memory_bytes);
        assert_eq!(memory.used, memory.total - memory.free);

        let (result, name) = text(
            |buffer, length| nvmlDeviceGetName(device, buffer, length),
            96,
        );
        assert_eq!(
            (result, name.as_str()),
            (NVML_SUCCESS, expected.name.as_str())
        );
    });
}

#[test]
fn devices_by_index() {
    initialized(|config| unsafe {
        let mut count = 0;
        assert_eq!(nvmlDeviceGetCount(&mut count), NVML_SUCCESS);
        assert_eq!(
            count as usize,
            config.devices.len(),
            "every device; CUDA_VISIBLE_DEVICES is ignored"
        );
        for index in 0..count {
            let device = handle(index);
            let mut legacy = ptr::null_mut();
            assert_eq!(nvmlDeviceGetHandleByIndex(index, &mut legacy), NVML_SUCCESS);
            assert_eq!(legacy, device);
            let (result, uuid) = text(
                |buffer, length| nvmlDeviceGetUUID(device, buffer, length),
                80,
            );
            assert_eq!(result, NVML_SUCCESS);
            assert_eq!(uuid, config.devices[index as usize].uuid.to_string());
            let (mut major, mut minor) = (0, 0);
            assert_eq!(
                nvmlDeviceGetCudaComputeCapability(device, &mut major, &mut minor),
                NVML_SUCCESS
            );
            assert_eq!(
                (major, minor),
                (
                    config.devices[index as usize].compute_capability.major,
                    config.devices[index as usize].compute_capability.minor
                )
            );
        }
        let mut device = ptr::null_mut();
        assert_eq!(
            nvmlDeviceGetHandleByIndex_v2(count, &mut device),
            NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            nvmlDeviceGetHandleByIndex_v2(0, ptr::null_mut()),
            NVML_ERROR_INVALID_ARGUMENT
        );
    });
}

#[test]
fn unknown_uuids_and_handles() {
    initialized(|_| unsafe {
        let mut device = ptr::null_mut();
        let unknown = c"GPU-00000000-0000-0000-0000-000000000000";
        assert_eq!(
            nvmlDeviceGetHandleByUUID(unknown.as_ptr(), &mut device),
            NVML_ERROR_NOT_FOUND
        );
        assert_eq!(
            nvmlDeviceGetHandleByUUID(ptr::null(), &mut device),
            NVML_ERROR_INVALID_ARGUMENT
        );
        let mut memory = nvmlMemory_t::default();
        let mut not_a_handle = 0_u8;
        let bogus = (&raw mut not_a_handle).cast();
        assert_eq!(
            nvmlDeviceGetMemoryInfo(bogus, &mut memory),
            NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            nvmlDeviceGetMemoryInfo(handle(0), ptr::null_mut()),
            NVML_ERROR_INVALID_ARGUMENT
        );
    });
}

#[test]
fn buffers_too_small_are_refused_not_truncated() {
    initialized(|config| unsafe {
        let device = handle(0);
        let name_len = config.devices[0].name.len() as c_uint;
        let (result, name) = text(|buffer, _| nvmlDeviceGetName(device, buffer, name_len), 0);
        assert_eq!((result, name.as_str()), (NVML_ERROR_INSUFFICIENT_SIZE, ""));
        let (result, _) = text(
            |buffer, _| nvmlDeviceGetName(device, buffer, name_len + 1),
            0,
        );
        assert_eq!(result, NVML_SUCCESS, "exactly enough room for the NUL");
        let (result, _) = text(
            |buffer, length| nvmlDeviceGetUUID(device, buffer, length),
            40,
        );
        assert_eq!(result, NVML_ERROR_INSUFFICIENT_SIZE);
        let (result, _) = text(
            |buffer, length| nvmlSystemGetDriverVersion(buffer, length),
            2,
        );
        assert_eq!(result, NVML_ERROR_INSUFFICIENT_SIZE);
    });
}

/// The newest Ollama asks only for the driver version.
#[test]
fn system_versions() {
    initialized(|config| unsafe {
        let (result, version) = text(
            |buffer, length| nvmlSystemGetDriverVersion(buffer, length),
            80,
        );
        assert_eq!(
            (result, version.as_str()),
            (NVML_SUCCESS, config.driver_version.as_str())
        );
        let mut cuda = 0;
        assert_eq!(nvmlSystemGetCudaDriverVersion(&mut cuda), NVML_SUCCESS);
        assert_eq!(cuda, config.cuda_version);
        assert_eq!(nvmlSystemGetCudaDriverVersion_v2(&mut cuda), NVML_SUCCESS);
        assert_eq!(
            nvmlSystemGetCudaDriverVersion_v2(ptr::null_mut()),
            NVML_ERROR_INVALID_ARGUMENT
        );
    });
}

#[test]
fn error_strings_need_no_init() {
    let text = |code| {
        unsafe { CStr::from_ptr(nvmlErrorString(code)) }
            .to_str()
            .map(str::to_owned)
    };
    assert_eq!(text(NVML_SUCCESS).as_deref(), Ok("Success"));
    assert_eq!(
        text(NVML_ERROR_UNINITIALIZED).as_deref(),
        Ok("Uninitialized")
    );
    assert_eq!(
        text(NVML_ERROR_INSUFFICIENT_SIZE).as_deref(),
        Ok("Insufficient Size")
    );
    assert_eq!(
        text(NVML_ERROR_DRIVER_NOT_LOADED).as_deref(),
        Ok("Driver Not Loaded")
    );
    assert_eq!(text(12345).as_deref(), Ok("Unknown Error"));
}

#[test]
fn export_list() {
    assert_eq!(
        EMULATED_FUNCTIONS.len(),
        16,
        "plus nvmlErrorString, outside the macro"
    );
    assert!(emulated_function(b"nvmlInit_v2").is_some());
    assert!(emulated_function(b"nvmlErrorString").is_none());
    let listed: Vec<&str> = include_str!("../exports.txt")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert_eq!(listed.len(), 354);
    // Generated exports exist on x86_64 Linux only.
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        for name in &listed {
            assert!(exported_function(name.as_bytes()).is_some(), "{name}");
        }
        let generated = FORWARDED_FUNCTIONS.len();
        assert_eq!(EMULATED_FUNCTIONS.len() + 1 + generated, listed.len());
    }
}
