//! NVML's view of the devices: every configured device in physical order (NVML ignores
//! `CUDA_VISIBLE_DEVICES`), named by handles that stay valid for the life of the process.

use std::ffi::c_void;
use std::ptr;

use vgpu_shim_common::{Config, Device, MAX_DEVICES};

use crate::ffi::*;
use crate::library::initialized;

/// One byte per possible device: a handle is the address of its slot. Handles are only ever
/// compared with these addresses, never dereferenced.
static HANDLE_SLOTS: [u8; MAX_DEVICES] = [0; MAX_DEVICES];

/// The handle of device `index`.
pub fn handle_by_index(config: &Config, index: usize) -> Outcome<nvmlDevice_t> {
    if index >= config.devices.len() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    let slot = HANDLE_SLOTS.get(index).ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
    Ok(ptr::from_ref(slot).cast::<c_void>().cast_mut())
}

/// The handle of the device whose UUID is `uuid` (`GPU-…`, case ignored).
pub fn handle_by_uuid(config: &Config, uuid: &[u8]) -> Outcome<nvmlDevice_t> {
    let index = config.devices.iter().position(|device| {
        device
            .uuid
            .to_string()
            .as_bytes()
            .eq_ignore_ascii_case(uuid)
    });
    handle_by_index(config, index.ok_or(NVML_ERROR_NOT_FOUND)?)
}

/// The device a handle names; anything but a handle this library gave out is invalid.
pub fn device(config: &Config, handle: nvmlDevice_t) -> Outcome<&Device> {
    HANDLE_SLOTS
        .iter()
        .position(|slot| ptr::eq(slot, handle.cast::<u8>()))
        .and_then(|index| config.devices.get(index))
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)
}

/// The device a handle names, while NVML is initialised.
pub fn initialized_device(handle: nvmlDevice_t) -> Outcome<&'static Device> {
    device(initialized()?, handle)
}

pub fn memory(device: &Device) -> nvmlMemory_t {
    nvmlMemory_t {
        total: device.total_memory_bytes,
        free: device.free_memory_bytes,
        used: device
            .total_memory_bytes
            .saturating_sub(device.free_memory_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_pairs(vars)
    }

    #[test]
    fn handles_round_trip_and_ignore_cuda_visible_devices() {
        let config = config(&[("VGPU_DEVICE_COUNT", "3"), ("CUDA_VISIBLE_DEVICES", "")]);
        let handles: Vec<nvmlDevice_t> = (0..3)
            .map(|i| handle_by_index(&config, i).expect("handle"))
            .collect();
        assert!(handles.iter().all(|h| !h.is_null()));
        assert_ne!(handles[0], handles[1]);
        assert_eq!(handle_by_index(&config, 1), Ok(handles[1]), "stable");
        assert_eq!(device(&config, handles[2]).map(|d| d.pci.bus), Ok(3));
        assert_eq!(
            handle_by_index(&config, 3),
            Err(NVML_ERROR_INVALID_ARGUMENT)
        );
    }

    #[test]
    fn foreign_handles_are_rejected() {
        let config = config(&[("VGPU_DEVICE_COUNT", "1")]);
        let local = 0_u8;
        assert_eq!(
            device(&config, ptr::null_mut()),
            Err(NVML_ERROR_INVALID_ARGUMENT)
        );
        assert_eq!(
            device(&config, ptr::from_ref(&local).cast_mut().cast()),
            Err(NVML_ERROR_INVALID_ARGUMENT)
        );
        let beyond = ptr::from_ref(&HANDLE_SLOTS[1]).cast_mut().cast();
        assert_eq!(
            device(&config, beyond),
            Err(NVML_ERROR_INVALID_ARGUMENT),
            "slot of a device not configured"
        );
    }

    #[test]
    fn lookup_by_uuid() {
        let config = config(&[("VGPU_DEVICE_COUNT", "2")]);
        let wanted = config.devices[1].uuid.to_string();
        assert_eq!(
            handle_by_uuid(&config, wanted.as_bytes()),
            handle_by_index(&config, 1)
        );
        assert_eq!(
            handle_by_uuid(&config, wanted.to_uppercase().as_bytes()),
            handle_by_index(&config, 1)
        );
        assert_eq!(
            handle_by_uuid(&config, b"GPU-7a3c"),
            Err(NVML_ERROR_NOT_FOUND),
            "no prefixes in NVML"
        );
    }

    #[test]
    fn memory_info() {
        let config = config(&[
            ("VGPU_TOTAL_MEMORY_MIB", "1024"),
            ("VGPU_FREE_MEMORY_MIB", "768"),
        ]);
        let memory = memory(&config.devices[0]);
        assert_eq!(
            memory,
            nvmlMemory_t {
                total: 1 << 30,
                free: 768 << 20,
                used: 256 << 20
            }
        );
    }
}
