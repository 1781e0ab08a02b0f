//! End to end through the real environment: each case re-runs this test binary with its own
//! variables and a marker, since the configuration is read once per process.

use std::ffi::{CStr, c_char, c_uint};
use std::ptr;

use vgpu_nvml::ffi::*;
use vgpu_nvml::*;

#[path = "../../common/test-support/child.rs"]
mod child;
use child::{run_child, started_by_parent};

#[test]
fn injected_failures() {
    run_child(
        "child_injected_failures",
        &[(
            "VGPU_FAIL",
            "nvmlInit_v2=NVML_ERROR_DRIVER_NOT_LOADED,nvmlErrorString=3",
        )],
    );
}

#[test]
#[ignore = "run by injected_failures"]
fn child_injected_failures() {
    if !started_by_parent("child_injected_failures") {
        return;
    }
    assert_eq!(unsafe { nvmlInit_v2() }, NVML_ERROR_DRIVER_NOT_LOADED);
    let mut count = 0;
    assert_eq!(
        unsafe { nvmlDeviceGetCount_v2(&mut count) },
        NVML_ERROR_UNINITIALIZED
    );
    assert_eq!(
        unsafe { nvmlInitWithFlags(0) },
        NVML_SUCCESS,
        "only the named function fails"
    );
    let message = unsafe { CStr::from_ptr(nvmlErrorString(9)) };
    assert_eq!(
        message, c"Driver Not Loaded",
        "a code cannot be injected into a string function"
    );
}

#[test]
fn nvml_ignores_cuda_visible_devices() {
    run_child(
        "child_nvml_ignores_cuda_visible_devices",
        &[("VGPU_DEVICE_COUNT", "2"), ("CUDA_VISIBLE_DEVICES", "1")],
    );
}

#[test]
#[ignore = "run by nvml_ignores_cuda_visible_devices"]
fn child_nvml_ignores_cuda_visible_devices() {
    if !started_by_parent("child_nvml_ignores_cuda_visible_devices") {
        return;
    }
    assert_eq!(unsafe { nvmlInit_v2() }, NVML_SUCCESS);
    let mut count: c_uint = 0;
    assert_eq!(unsafe { nvmlDeviceGetCount_v2(&mut count) }, NVML_SUCCESS);
    assert_eq!(count, 2);
    let mut device = ptr::null_mut();
    assert_eq!(
        unsafe { nvmlDeviceGetHandleByIndex_v2(0, &mut device) },
        NVML_SUCCESS
    );
    let mut uuid = [0 as c_char; 80];
    assert_eq!(
        unsafe { nvmlDeviceGetUUID(device, uuid.as_mut_ptr(), 80) },
        NVML_SUCCESS
    );
    let uuid = unsafe { CStr::from_ptr(uuid.as_ptr()) };
    assert_eq!(
        uuid.to_str(),
        Ok("GPU-7a3c0000-0000-4000-8000-000000000000")
    );
}

#[test]
fn unloadable_passthrough_fails_init_with_one_message() {
    let output = run_child(
        "child_unloadable_passthrough",
        &[("VGPU_NVML_PASSTHROUGH", "/nonexistent/libnvidia-ml.so.1")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("vgpu-"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(
            "vgpu-nvml: cannot load pass-through library /nonexistent/libnvidia-ml.so.1: "
        ),
        "{stderr}"
    );
}

#[test]
#[ignore = "run by unloadable_passthrough_fails_init_with_one_message"]
fn child_unloadable_passthrough() {
    if !started_by_parent("child_unloadable_passthrough") {
        return;
    }
    for _ in 0..3 {
        assert_eq!(unsafe { nvmlInit_v2() }, NVML_ERROR_LIBRARY_NOT_FOUND);
    }
    assert_eq!(unsafe { nvmlShutdown() }, NVML_ERROR_UNINITIALIZED);
}
