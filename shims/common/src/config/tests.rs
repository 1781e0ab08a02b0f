use std::collections::HashMap;

use super::*;
use crate::fail::FailAction;

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn defaults() {
    let config = config(&[]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.devices.len(), 1);
    let device = &config.devices[0];
    assert_eq!(device.name, "vGPU H100 80GB");
    assert_eq!(
        device.uuid.to_string(),
        "GPU-7a3c0000-0000-4000-8000-000000000000"
    );
    assert_eq!(device.total_memory_bytes, 81920 << 20);
    assert_eq!(device.free_memory_bytes, (81920 - 512) << 20);
    assert_eq!(
        device.compute_capability,
        ComputeCapability { major: 9, minor: 0 }
    );
    assert_eq!(
        device.pci,
        PciLocation {
            domain: 0,
            bus: 1,
            device: 0
        }
    );
    assert_eq!(config.cuda_visible, [0]);
    assert_eq!(config.driver_version, "580.65.06");
    assert_eq!(config.cuda_version, 13000);
    assert!(config.fail.is_empty());
    assert_eq!(config.cuda_passthrough, None);
    assert_eq!(config.nvml_passthrough, None);
}

#[test]
fn overrides() {
    let config = config(&[
        ("VGPU_DEVICE_COUNT", "3"),
        ("VGPU_DEVICE_NAME", "vGPU A100 40GB"),
        (
            "VGPU_DEVICE_UUIDS",
            "GPU-11111111-2222-3333-4444-555555555555, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        ),
        ("VGPU_TOTAL_MEMORY_MIB", "40960"),
        ("VGPU_FREE_MEMORY_MIB", "1000"),
        ("VGPU_COMPUTE_CAPABILITY", "8.0"),
        ("VGPU_DRIVER_VERSION", "550.54.15"),
        ("VGPU_CUDA_VERSION", "12.4"),
        ("VGPU_FAIL", "cuInit=hang"),
        (
            "VGPU_CUDA_PASSTHROUGH",
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        ),
        (
            "VGPU_NVML_PASSTHROUGH",
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
        ),
        ("CUDA_VISIBLE_DEVICES", "2,0"),
    ]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let uuids: Vec<String> = config.devices.iter().map(|d| d.uuid.to_string()).collect();
    assert_eq!(
        uuids,
        [
            "GPU-11111111-2222-3333-4444-555555555555",
            "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "GPU-7a3c0000-0000-4000-8000-000000000002",
        ]
    );
    let device = &config.devices[2];
    assert_eq!(device.name, "vGPU A100 40GB");
    assert_eq!(device.total_memory_bytes, 40960 << 20);
    assert_eq!(device.free_memory_bytes, 1000 << 20);
    assert_eq!(
        device.compute_capability,
        ComputeCapability { major: 8, minor: 0 }
    );
    assert_eq!(device.pci.bus, 3);
    assert_eq!(config.cuda_visible, [2, 0]);
    assert_eq!(config.driver_version, "550.54.15");
    assert_eq!(config.cuda_version, 12040);
    assert_eq!(config.fail.action_for("cuInit"), Some(FailAction::Hang));
    assert_eq!(
        config.cuda_passthrough.as_deref(),
        Some(c"/usr/lib/x86_64-linux-gnu/libcuda.so.1")
    );
    assert_eq!(
        config.nvml_passthrough.as_deref(),
        Some(c"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
    );
}

#[test]
fn free_memory_follows_the_total_by_default() {
    let config = config(&[("VGPU_TOTAL_MEMORY_MIB", "24576")]);
    assert_eq!(config.devices[0].free_memory_bytes, (24576 - 512) << 20);
    let tiny = self::config(&[("VGPU_TOTAL_MEMORY_MIB", "100")]);
    assert_eq!(tiny.devices[0].free_memory_bytes, 0);
}

#[test]
fn bad_values_fall_back_to_defaults_with_one_warning_each() {
    let config = config(&[
        ("VGPU_DEVICE_COUNT", "two"),
        ("VGPU_TOTAL_MEMORY_MIB", "-5"),
        ("VGPU_FREE_MEMORY_MIB", "99999999"),
        ("VGPU_COMPUTE_CAPABILITY", "9"),
        ("VGPU_CUDA_VERSION", "13.0.1"),
        ("VGPU_DEVICE_NAME", &"x".repeat(96)),
        ("VGPU_DRIVER_VERSION", &"9".repeat(80)),
    ]);
    assert_eq!(config.warnings.len(), 7, "{:#?}", config.warnings);
    assert!(
        config.warnings[0].starts_with("VGPU_DEVICE_COUNT=\"two\" is not"),
        "{}",
        config.warnings[0]
    );
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.starts_with("VGPU_CUDA_VERSION") && w.ends_with("using 13.0"))
    );
    assert_eq!(config.devices.len(), 1);
    assert_eq!(config.devices[0].total_memory_bytes, 81920 << 20);
    assert_eq!(config.devices[0].free_memory_bytes, (81920 - 512) << 20);
    assert_eq!(config.devices[0].compute_capability.major, 9);
    assert_eq!(config.devices[0].name, "vGPU H100 80GB");
    assert_eq!(config.cuda_version, 13000);
    assert_eq!(config.driver_version, "580.65.06");
}

#[test]
fn device_count_limits() {
    assert!(config(&[("VGPU_DEVICE_COUNT", "0")]).devices.is_empty());
    assert_eq!(config(&[("VGPU_DEVICE_COUNT", "64")]).devices.len(), 64);
    let too_many = config(&[("VGPU_DEVICE_COUNT", "65")]);
    assert_eq!(too_many.devices.len(), 1);
    assert_eq!(too_many.warnings.len(), 1);
    let huge = config(&[("VGPU_DEVICE_COUNT", "99999999999999999999999")]);
    assert_eq!(huge.devices.len(), 1);
}

#[test]
fn memory_sizes_that_overflow_bytes_are_rejected() {
    let config = config(&[("VGPU_TOTAL_MEMORY_MIB", &(u64::MAX / 1024).to_string())]);
    assert_eq!(config.devices[0].total_memory_bytes, 81920 << 20);
    assert_eq!(config.warnings.len(), 1);
}

#[test]
fn empty_values_count_as_unset() {
    let config = config(&[
        ("VGPU_DEVICE_COUNT", ""),
        ("VGPU_DEVICE_NAME", "  "),
        ("VGPU_CUDA_PASSTHROUGH", ""),
    ]);
    assert!(config.warnings.is_empty());
    assert_eq!(config.devices.len(), 1);
    assert_eq!(config.cuda_passthrough, None);
}

#[test]
fn version_forms() {
    for (text, number) in [
        ("12.4", 12040),
        ("11.8", 11080),
        ("13.0", 13000),
        (" 12.2 ", 12020),
    ] {
        assert_eq!(
            config(&[("VGPU_CUDA_VERSION", text)]).cuda_version,
            number,
            "{text}"
        );
    }
    for bad in ["13", "13.", ".0", "a.b", "0.5", "13.-1", "13.123"] {
        let config = config(&[("VGPU_CUDA_VERSION", bad)]);
        assert_eq!(config.cuda_version, 13000, "{bad}");
        assert_eq!(config.warnings.len(), 1, "{bad}");
    }
    let cc = config(&[("VGPU_COMPUTE_CAPABILITY", "12.1")]);
    assert_eq!(
        cc.devices[0].compute_capability,
        ComputeCapability {
            major: 12,
            minor: 1
        }
    );
}

#[test]
fn bad_uuid_entries_keep_defaults() {
    let config = config(&[
        ("VGPU_DEVICE_COUNT", "3"),
        (
            "VGPU_DEVICE_UUIDS",
            "GPU-11111111-2222-3333-4444-555555555555,not-a-uuid,\
             GPU-11111111-2222-3333-4444-555555555555,GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        ),
    ]);
    assert_eq!(config.warnings.len(), 3, "{:#?}", config.warnings);
    assert_eq!(
        config.devices[0].uuid.to_string(),
        "GPU-11111111-2222-3333-4444-555555555555"
    );
    assert_eq!(config.devices[1].uuid, Uuid::default_for(1));
    assert_eq!(config.devices[2].uuid, Uuid::default_for(2));
}

#[test]
fn visible_devices_follow_cuda_visible_devices() {
    let two = [("VGPU_DEVICE_COUNT", "2")];
    assert_eq!(config(&two).cuda_visible, [0, 1]);
    for (spec, visible) in [
        ("", vec![]),
        ("-1", vec![]),
        ("1", vec![1]),
        ("0,9,1", vec![0]),
    ] {
        let config = config(&[two[0], ("CUDA_VISIBLE_DEVICES", spec)]);
        assert_eq!(config.cuda_visible, visible, "{spec:?}");
        assert_eq!(config.devices.len(), 2, "NVML still sees every device");
    }
}

#[test]
fn fail_plan_warnings_are_collected() {
    let config = config(&[("VGPU_FAIL", "cuInit=oops")]);
    assert_eq!(config.warnings.len(), 1);
    assert!(config.fail.is_empty());
}
