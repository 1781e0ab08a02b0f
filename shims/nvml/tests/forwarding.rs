//! The generated exports, through the built shim (`libvgpu_nvml.so`, opened as a program opens
//! NVML) in front of a stand-in for the real library built from `data/real-libnvidia-ml.c`.
//! Each case re-runs this test binary with its own variables, as the configuration is read once
//! per process.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

#[path = "../../common/test-support/child.rs"]
mod child;
#[path = "../../common/test-support/real_library.rs"]
mod real_library;
use child::{run_child, started_by_parent};
use real_library::{build_c_library, folded, function, open_shim, real_calls};

const PASS_THROUGH: &str = "VGPU_NVML_PASSTHROUGH";
const DEVICE: usize = 0x7000;

type GetPowerUsage = unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_int;
type SetClocks = unsafe extern "C" fn(*mut c_void, c_uint, c_uint) -> c_int;

fn real_nvml() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = build_c_library("real-libnvidia-ml.c");
        path.to_str().expect("UTF-8 path").to_owned()
    })
    .clone()
}

/// nvmlDeviceGetPowerUsage through the shim: its status, and what it wrote.
fn power_usage(shim: usize) -> (c_int, c_uint) {
    // SAFETY: NVML's signature.
    let get: GetPowerUsage = unsafe { function(shim, "nvmlDeviceGetPowerUsage") };
    let mut milliwatts = 0;
    let result = unsafe { get(DEVICE as *mut c_void, &mut milliwatts) };
    (result, milliwatts)
}

#[test]
fn forwards_by_symbol() {
    run_child("child_forwards_by_symbol", &[(PASS_THROUGH, &real_nvml())]);
}

#[test]
#[ignore = "run by forwards_by_symbol"]
fn child_forwards_by_symbol() {
    if !started_by_parent("child_forwards_by_symbol") {
        return;
    }
    let shim = open_shim("libvgpu_nvml.so");
    assert_eq!(power_usage(shim), (0, 0x7001));
    // SAFETY: NVML's signature.
    let set_clocks: SetClocks = unsafe { function(shim, "nvmlDeviceSetApplicationsClocks") };
    let result = unsafe { set_clocks(DEVICE as *mut c_void, 1593, 1980) };
    assert_eq!(result, folded(&[0x7000, 1593, 1980]));
    assert_eq!(real_calls(PASS_THROUGH), 2);
    // SAFETY: takes a device and an out-pointer, neither touched here.
    let fan_speed: GetPowerUsage = unsafe { function(shim, "nvmlDeviceGetFanSpeed") };
    let mut speed = 0;
    let result = unsafe { fan_speed(DEVICE as *mut c_void, &mut speed) };
    assert_eq!(result, 13, "listed, but not in this library");
}

#[test]
fn injected_failures_apply_to_generated_exports() {
    let vars = [
        (PASS_THROUGH, real_nvml()),
        (
            "VGPU_FAIL",
            "nvmlDeviceGetPowerUsage=NVML_ERROR_GPU_IS_LOST".to_owned(),
        ),
    ];
    let vars = vars.each_ref().map(|(name, value)| (*name, value.as_str()));
    run_child("child_injected_failures_apply_to_generated_exports", &vars);
}

#[test]
#[ignore = "run by injected_failures_apply_to_generated_exports"]
fn child_injected_failures_apply_to_generated_exports() {
    if !started_by_parent("child_injected_failures_apply_to_generated_exports") {
        return;
    }
    let shim = open_shim("libvgpu_nvml.so");
    assert_eq!(power_usage(shim), (15, 0), "the code, and nothing written");
    assert_eq!(real_calls(PASS_THROUGH), 0);
}

#[test]
fn emulated_generated_exports_are_not_supported() {
    run_child("child_emulated_generated_exports_are_not_supported", &[]);
}

#[test]
#[ignore = "run by emulated_generated_exports_are_not_supported"]
fn child_emulated_generated_exports_are_not_supported() {
    if !started_by_parent("child_emulated_generated_exports_are_not_supported") {
        return;
    }
    let shim = open_shim("libvgpu_nvml.so");
    assert_eq!(power_usage(shim), (3, 0));
}
