//! Devices as CUDA numbers them: initialisation, ordinals (indices into the devices that
//! `CUDA_VISIBLE_DEVICES` leaves visible) and device properties.

use std::ffi::{c_char, c_int, c_uint};
use std::sync::atomic::{AtomicBool, Ordering};

use vgpu_shim_common::{Config, Device};

use crate::ffi::*;

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// `cuInit`. `flags` must be 0. Fails when a configured pass-through library could not be
/// loaded, and with `CUDA_ERROR_NO_DEVICE` when no device is visible, as the real driver does
/// under `CUDA_VISIBLE_DEVICES=""`.
pub fn initialize(config: &Config, flags: c_uint, pass_through_unavailable: bool) -> Outcome {
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if pass_through_unavailable {
        return Err(CUDA_ERROR_NOT_INITIALIZED);
    }
    if config.cuda_visible.is_empty() {
        return Err(CUDA_ERROR_NO_DEVICE);
    }
    INITIALIZED.store(true, Ordering::Release);
    Ok(())
}

/// The process's configuration, once `cuInit` has succeeded.
pub fn initialized() -> Outcome<&'static Config> {
    if INITIALIZED.load(Ordering::Acquire) {
        Ok(Config::get())
    } else {
        Err(CUDA_ERROR_NOT_INITIALIZED)
    }
}

/// The device behind a CUDA ordinal, once `cuInit` has succeeded.
pub fn initialized_device(ordinal: CUdevice) -> Outcome<&'static Device> {
    resolve(initialized()?, ordinal)
}

/// The number of visible devices.
pub fn count(config: &Config) -> c_int {
    c_int::try_from(config.cuda_visible.len()).unwrap_or(c_int::MAX)
}

/// The physical device behind a CUDA ordinal.
pub fn resolve(config: &Config, ordinal: CUdevice) -> Outcome<&Device> {
    usize::try_from(ordinal)
        .ok()
        .and_then(|ordinal| config.cuda_visible.get(ordinal))
        .and_then(|&physical| config.devices.get(physical))
        .ok_or(CUDA_ERROR_INVALID_DEVICE)
}

/// `cuDeviceGetPCIBusId`'s text: `domain:bus:device.function` in hex.
pub fn pci_bus_id(device: &Device) -> String {
    let pci = device.pci;
    format!("{:04x}:{:02x}:{:02x}.0", pci.domain, pci.bus, pci.device)
}

pub fn uuid(device: &Device) -> CUuuid {
    CUuuid {
        bytes: device.uuid.bytes().map(|byte| byte as c_char),
    }
}

/// The legacy `cuDeviceTotalMem`'s 32-bit answer: capped, since it cannot hold 80 GiB.
pub fn legacy_total_memory(device: &Device) -> c_uint {
    c_uint::try_from(device.total_memory_bytes).unwrap_or(c_uint::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_pairs(vars)
    }

    #[test]
    fn ordinals_follow_cuda_visible_devices() {
        let config = config(&[("VGPU_DEVICE_COUNT", "3"), ("CUDA_VISIBLE_DEVICES", "2,0")]);
        assert_eq!(count(&config), 2);
        assert_eq!(resolve(&config, 0).map(|d| d.pci.bus), Ok(3));
        assert_eq!(resolve(&config, 1).map(|d| d.pci.bus), Ok(1));
        assert_eq!(resolve(&config, 2).err(), Some(CUDA_ERROR_INVALID_DEVICE));
        assert_eq!(resolve(&config, -1).err(), Some(CUDA_ERROR_INVALID_DEVICE));
    }

    #[test]
    fn initialization_checks_flags_backend_and_devices() {
        let hidden = config(&[("CUDA_VISIBLE_DEVICES", "")]);
        assert_eq!(initialize(&hidden, 0, false), Err(CUDA_ERROR_NO_DEVICE));
        let normal = config(&[]);
        assert_eq!(initialize(&normal, 1, false), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            initialize(&normal, 0, true),
            Err(CUDA_ERROR_NOT_INITIALIZED)
        );
    }

    #[test]
    fn identity_and_memory() {
        let config = config(&[
            ("VGPU_DEVICE_COUNT", "2"),
            ("VGPU_TOTAL_MEMORY_MIB", "1024"),
        ]);
        assert_eq!(pci_bus_id(&config.devices[1]), "0000:02:00.0");
        let bytes = uuid(&config.devices[1]).bytes.map(|b| b as u8);
        assert_eq!(bytes, config.devices[1].uuid.bytes());
        assert_eq!(legacy_total_memory(&config.devices[0]), 1 << 30);
        let big = self::config(&[]);
        assert_eq!(legacy_total_memory(&big.devices[0]), c_uint::MAX);
    }
}
