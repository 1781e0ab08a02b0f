//! End to end through the real environment. The configuration is read once per process, so
//! each case re-runs this test binary with its own variables and a marker; the `child_*` tests
//! are skipped (and say so) without the marker.

use std::ffi::c_int;
use std::sync::mpsc;
use std::time::Duration;

use vgpu_cuda::ffi::*;
use vgpu_cuda::*;

#[path = "../../common/test-support/child.rs"]
mod child;
use child::{run_child, started_by_parent};

fn device_count() -> (CUresult, c_int) {
    let mut count = -1;
    let result = unsafe { cuDeviceGetCount(&mut count) };
    (result, count)
}

#[test]
fn injected_failures() {
    run_child(
        "child_injected_failures",
        &[(
            "VGPU_FAIL",
            "cuInit=CUDA_ERROR_NO_DEVICE,cuDriverGetVersion=999",
        )],
    );
}

#[test]
#[ignore = "run by injected_failures"]
fn child_injected_failures() {
    if !started_by_parent("child_injected_failures") {
        return;
    }
    let mut version = 0;
    assert_eq!(unsafe { cuInit(0) }, CUDA_ERROR_NO_DEVICE);
    assert_eq!(
        unsafe { cuDriverGetVersion(&mut version) },
        CUDA_ERROR_UNKNOWN
    );
    assert_eq!(version, 0, "an injected failure does no work");
    assert_eq!(device_count().0, CUDA_ERROR_NOT_INITIALIZED);
}

#[test]
fn hang() {
    run_child("child_hang", &[("VGPU_FAIL", "cuDeviceGetCount=hang")]);
}

#[test]
#[ignore = "run by hang"]
fn child_hang() {
    if !started_by_parent("child_hang") {
        return;
    }
    assert_eq!(unsafe { cuInit(0) }, CUDA_SUCCESS);
    let (finished, watcher) = mpsc::channel();
    std::thread::spawn(move || finished.send(device_count()));
    assert_eq!(
        watcher.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
}

#[test]
fn no_visible_devices() {
    run_child("child_no_visible_devices", &[("CUDA_VISIBLE_DEVICES", "")]);
}

#[test]
#[ignore = "run by no_visible_devices"]
fn child_no_visible_devices() {
    if !started_by_parent("child_no_visible_devices") {
        return;
    }
    assert_eq!(unsafe { cuInit(0) }, CUDA_ERROR_NO_DEVICE);
    assert_eq!(device_count().0, CUDA_ERROR_NOT_INITIALIZED);
}

#[test]
fn visible_devices_reorder_and_select() {
    let vars = [
        ("VGPU_DEVICE_COUNT", "3"),
        (
            "CUDA_VISIBLE_DEVICES",
            "2,GPU-7a3c0000-0000-4000-8000-000000000000,7,1",
        ),
    ];
    run_child("child_visible_devices_reorder_and_select", &vars);
}

#[test]
#[ignore = "run by visible_devices_reorder_and_select"]
fn child_visible_devices_reorder_and_select() {
    if !started_by_parent("child_visible_devices_reorder_and_select") {
        return;
    }
    assert_eq!(unsafe { cuInit(0) }, CUDA_SUCCESS);
    assert_eq!(device_count(), (CUDA_SUCCESS, 2));
    let mut bus = 0;
    assert_eq!(
        unsafe { cuDeviceGetAttribute(&mut bus, 33, 0) },
        CUDA_SUCCESS
    );
    assert_eq!(bus, 3, "ordinal 0 is physical device 2");
    let mut uuid = CUuuid::default();
    assert_eq!(unsafe { cuDeviceGetUuid_v2(&mut uuid, 1) }, CUDA_SUCCESS);
    assert_eq!(
        uuid.bytes.map(|b| b as u8),
        vgpu_shim_common::Uuid::default_for(0).bytes()
    );
}

#[test]
fn unloadable_passthrough_fails_init_with_one_message() {
    let output = run_child(
        "child_unloadable_passthrough",
        &[
            ("VGPU_CUDA_PASSTHROUGH", "/nonexistent/libcuda.so.1"),
            ("VGPU_DEVICE_COUNT", "lots"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("vgpu-"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("vgpu-shim: VGPU_DEVICE_COUNT=\"lots\""),
        "{stderr}"
    );
    assert!(
        lines[1]
            .starts_with("vgpu-cuda: cannot load pass-through library /nonexistent/libcuda.so.1: "),
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
        assert_eq!(unsafe { cuInit(0) }, CUDA_ERROR_NOT_INITIALIZED);
    }
    assert_eq!(device_count().0, CUDA_ERROR_NOT_INITIALIZED);
    let mut version = 0;
    assert_eq!(
        unsafe { cuDriverGetVersion(&mut version) },
        CUDA_SUCCESS,
        "answered by the shim"
    );
}
