//! `cuDeviceGetAttribute`: the values of an H100 SXM, except those the configuration decides.

use std::ffi::c_int;

use vgpu_shim_common::Device;

use crate::ffi::*;

// `CUdevice_attribute` numbers, as in cuda.h.
const MAX_THREADS_PER_BLOCK: c_int = 1;
const MAX_BLOCK_DIM_X: c_int = 2;
const MAX_BLOCK_DIM_Y: c_int = 3;
const MAX_BLOCK_DIM_Z: c_int = 4;
const MAX_GRID_DIM_X: c_int = 5;
const MAX_GRID_DIM_Y: c_int = 6;
const MAX_GRID_DIM_Z: c_int = 7;
const MAX_SHARED_MEMORY_PER_BLOCK: c_int = 8;
const TOTAL_CONSTANT_MEMORY: c_int = 9;
const WARP_SIZE: c_int = 10;
const MAX_PITCH: c_int = 11;
const MAX_REGISTERS_PER_BLOCK: c_int = 12;
const CLOCK_RATE: c_int = 13;
const TEXTURE_ALIGNMENT: c_int = 14;
const GPU_OVERLAP: c_int = 15;
const MULTIPROCESSOR_COUNT: c_int = 16;
const CAN_MAP_HOST_MEMORY: c_int = 19;
const SURFACE_ALIGNMENT: c_int = 30;
const CONCURRENT_KERNELS: c_int = 31;
const ECC_ENABLED: c_int = 32;
const PCI_BUS_ID: c_int = 33;
const PCI_DEVICE_ID: c_int = 34;
const MEMORY_CLOCK_RATE: c_int = 36;
const GLOBAL_MEMORY_BUS_WIDTH: c_int = 37;
const L2_CACHE_SIZE: c_int = 38;
const MAX_THREADS_PER_MULTIPROCESSOR: c_int = 39;
const ASYNC_ENGINE_COUNT: c_int = 40;
const UNIFIED_ADDRESSING: c_int = 41;
const PCI_DOMAIN_ID: c_int = 50;
const COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const COMPUTE_CAPABILITY_MINOR: c_int = 76;
const STREAM_PRIORITIES_SUPPORTED: c_int = 78;
const GLOBAL_L1_CACHE_SUPPORTED: c_int = 79;
const LOCAL_L1_CACHE_SUPPORTED: c_int = 80;
const MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: c_int = 81;
const MAX_REGISTERS_PER_MULTIPROCESSOR: c_int = 82;
const MANAGED_MEMORY: c_int = 83;
const CONCURRENT_MANAGED_ACCESS: c_int = 89;
const COMPUTE_PREEMPTION_SUPPORTED: c_int = 90;
const COOPERATIVE_LAUNCH: c_int = 95;
const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: c_int = 97;
/// ggml uses its `cuMem*` pool only when this is set.
const VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: c_int = 102;
const MAX_BLOCKS_PER_MULTIPROCESSOR: c_int = 106;

/// Numbers below this are defined or reserved by cuda.h; those not listed above (INTEGRATED,
/// KERNEL_EXEC_TIMEOUT, COMPUTE_MODE "default", TCC_DRIVER, ...) read as 0. Larger are invalid.
const ATTRIBUTE_LIMIT: c_int = 150;

pub fn value(device: &Device, attribute: c_int) -> Outcome<c_int> {
    let pci = |part: u32| c_int::try_from(part).unwrap_or(0);
    let value = match attribute {
        MAX_THREADS_PER_BLOCK | MAX_BLOCK_DIM_X | MAX_BLOCK_DIM_Y => 1024,
        MAX_BLOCK_DIM_Z => 64,
        MAX_GRID_DIM_X | MAX_PITCH => c_int::MAX,
        MAX_GRID_DIM_Y | MAX_GRID_DIM_Z => 65535,
        MAX_SHARED_MEMORY_PER_BLOCK => 48 << 10,
        TOTAL_CONSTANT_MEMORY => 64 << 10,
        WARP_SIZE => 32,
        MAX_REGISTERS_PER_BLOCK | MAX_REGISTERS_PER_MULTIPROCESSOR => 65536,
        CLOCK_RATE => 1_980_000,        // kHz
        MEMORY_CLOCK_RATE => 2_619_000, // kHz
        TEXTURE_ALIGNMENT | SURFACE_ALIGNMENT => 512,
        MULTIPROCESSOR_COUNT => 132,
        PCI_BUS_ID => pci(device.pci.bus),
        PCI_DEVICE_ID => pci(device.pci.device),
        PCI_DOMAIN_ID => pci(device.pci.domain),
        GLOBAL_MEMORY_BUS_WIDTH => 5120,
        L2_CACHE_SIZE => 50 << 20,
        MAX_THREADS_PER_MULTIPROCESSOR => 2048,
        ASYNC_ENGINE_COUNT => 3,
        COMPUTE_CAPABILITY_MAJOR => device.compute_capability.major,
        COMPUTE_CAPABILITY_MINOR => device.compute_capability.minor,
        MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => 228 << 10,
        MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => 227 << 10,
        MAX_BLOCKS_PER_MULTIPROCESSOR => 32,
        GPU_OVERLAP
        | CAN_MAP_HOST_MEMORY
        | CONCURRENT_KERNELS
        | ECC_ENABLED
        | UNIFIED_ADDRESSING
        | STREAM_PRIORITIES_SUPPORTED
        | GLOBAL_L1_CACHE_SUPPORTED
        | LOCAL_L1_CACHE_SUPPORTED
        | MANAGED_MEMORY
        | CONCURRENT_MANAGED_ACCESS
        | COMPUTE_PREEMPTION_SUPPORTED
        | COOPERATIVE_LAUNCH
        | VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 1,
        _ if (1..ATTRIBUTE_LIMIT).contains(&attribute) => 0,
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_shim_common::Config;

    #[test]
    fn values() {
        let vars = [
            ("VGPU_DEVICE_COUNT", "2"),
            ("VGPU_COMPUTE_CAPABILITY", "8.6"),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        });
        let device = &config.devices[1];
        for (attribute, expected) in [
            (75, 8),
            (76, 6),
            (16, 132),
            (1, 1024),
            (18, 0),
            (33, 2),
            (34, 0),
            (50, 0),
            (102, 1),
            (149, 0),
        ] {
            assert_eq!(
                value(device, attribute),
                Ok(expected),
                "attribute {attribute}"
            );
        }
        for invalid in [150, 0, -3, c_int::MAX] {
            assert_eq!(
                value(device, invalid),
                Err(CUDA_ERROR_INVALID_VALUE),
                "attribute {invalid}"
            );
        }
    }
}
