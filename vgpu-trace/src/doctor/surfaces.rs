//! The symbols each consumer of a CUDA or NVML library needs, from Ollama's sources and
//! NVIDIA's runtime (see the lab's README): what a shim must export to be usable by each.
use crate::loader::classify::Api;

pub struct Surface {
    pub consumer: &'static str,
    pub api: Api,
    pub symbols: &'static [&'static str],
}

pub const SURFACES: &[Surface] = &[
    Surface {
        consumer: "Ollama era A (dlsym list)",
        api: Api::Cuda,
        symbols: &[
            "cuInit",
            "cuDriverGetVersion",
            "cuDeviceGetCount",
            "cuDeviceGet",
            "cuDeviceGetAttribute",
            "cuDeviceGetUuid",
            "cuDeviceGetName",
            "cuCtxCreate_v3",
            "cuMemGetInfo_v2",
            "cuCtxDestroy",
        ],
    },
    Surface {
        consumer: "Ollama era B (libggml-cuda.so imports)",
        api: Api::Cuda,
        symbols: &[
            "cuDeviceGet",
            "cuDeviceGetAttribute",
            "cuGetErrorString",
            "cuMemCreate",
            "cuMemAddressReserve",
            "cuMemMap",
            "cuMemSetAccess",
            "cuMemUnmap",
            "cuMemRelease",
            "cuMemAddressFree",
            "cuMemGetAllocationGranularity",
        ],
    },
    Surface {
        consumer: "Ollama era C (gpu-discover)",
        api: Api::Cuda,
        symbols: &[
            "cuInit",
            "cuDriverGetVersion",
            "cuDeviceGetCount",
            "cuDeviceGet",
            "cuDeviceGetAttribute",
            "cuDeviceGetName",
            "cuDeviceTotalMem_v2",
        ],
    },
    Surface {
        consumer: "libcudart (dlsym, then by name)",
        api: Api::Cuda,
        symbols: &["cuGetProcAddress_v2"],
    },
    Surface {
        consumer: "Ollama era B NVML (mem_nvml.cpp)",
        api: Api::Nvml,
        symbols: &[
            "nvmlInit_v2",
            "nvmlShutdown",
            "nvmlDeviceGetHandleByUUID",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetName",
            "nvmlErrorString",
        ],
    },
    Surface {
        consumer: "Ollama era C NVML",
        api: Api::Nvml,
        symbols: &["nvmlInit_v2", "nvmlSystemGetDriverVersion", "nvmlShutdown"],
    },
    Surface {
        consumer: "pynvml (nvidia-ml-py)",
        api: Api::Nvml,
        symbols: &["nvmlInitWithFlags", "nvmlShutdown"],
    },
];
