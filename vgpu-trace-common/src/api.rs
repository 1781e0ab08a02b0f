//! The CUDA driver and NVML discovery functions whose calls and return codes are traced, and,
//! for each, which arguments hold the answers worth reading after it returns. The id is the
//! uprobe cookie; the kernel reads what `OUTS` and `TEXT` say, userspace names the results.

/// Where a value is read after the call returns, from the arguments saved at entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    None,
    /// The argument itself.
    Arg(u8),
    /// A 32-bit value at `args[n] + offset`.
    I32At(u8, u8),
    /// A 64-bit value at `args[n] + offset`.
    U64At(u8, u8),
}

pub struct ApiSpec {
    pub name: &'static str,
    pub nvml: bool,
    /// Up to two values read after return.
    pub outs: [Out; 2],
    /// Labels of those values (as userspace prints them).
    pub labels: [&'static str; 2],
    /// A NUL-terminated string argument copied after return (symbol name, driver version).
    pub text: Option<u8>,
}

const fn cuda(
    name: &'static str,
    outs: [Out; 2],
    labels: [&'static str; 2],
    text: Option<u8>,
) -> ApiSpec {
    ApiSpec {
        name,
        nvml: false,
        outs,
        labels,
        text,
    }
}

const fn nvml(
    name: &'static str,
    outs: [Out; 2],
    labels: [&'static str; 2],
    text: Option<u8>,
) -> ApiSpec {
    ApiSpec {
        nvml: true,
        ..cuda(name, outs, labels, text)
    }
}

use Out::{Arg, I32At, None as No, U64At};

/// Indexed by id - 1; the id is what the uprobe cookie carries.
pub const SPECS: [ApiSpec; 21] = [
    cuda("cuInit", [Arg(0), No], ["flags", ""], None),
    cuda(
        "cuDriverGetVersion",
        [I32At(0, 0), No],
        ["version", ""],
        None,
    ),
    cuda("cuDeviceGetCount", [I32At(0, 0), No], ["count", ""], None),
    cuda(
        "cuDeviceGet",
        [I32At(0, 0), Arg(1)],
        ["device", "ordinal"],
        None,
    ),
    cuda(
        "cuDeviceGetAttribute",
        [I32At(0, 0), Arg(1)],
        ["value", "attribute"],
        None,
    ),
    cuda("cuDeviceGetName", [No, Arg(2)], ["", "device"], Some(0)),
    cuda(
        "cuDeviceTotalMem_v2",
        [U64At(0, 0), Arg(1)],
        ["bytes", "device"],
        None,
    ),
    cuda("cuCtxCreate_v3", [No, Arg(4)], ["", "device"], None),
    cuda(
        "cuMemGetInfo_v2",
        [U64At(0, 0), U64At(1, 0)],
        ["free", "total"],
        None,
    ),
    cuda(
        "cuGetProcAddress_v2",
        [Arg(2), U64At(1, 0)],
        ["cuda_version", "pfn"],
        Some(0),
    ),
    cuda(
        "cuGetProcAddress",
        [Arg(2), U64At(1, 0)],
        ["cuda_version", "pfn"],
        Some(0),
    ),
    nvml("nvmlInit_v2", [No, No], ["", ""], None),
    nvml("nvmlInitWithFlags", [Arg(0), No], ["flags", ""], None),
    nvml(
        "nvmlDeviceGetCount_v2",
        [I32At(0, 0), No],
        ["count", ""],
        None,
    ),
    nvml(
        "nvmlDeviceGetHandleByIndex_v2",
        [Arg(0), No],
        ["index", ""],
        None,
    ),
    nvml("nvmlDeviceGetHandleByUUID", [No, No], ["", ""], Some(0)),
    nvml(
        "nvmlDeviceGetMemoryInfo",
        [U64At(1, 0), U64At(1, 8)],
        ["total", "free"],
        None,
    ),
    nvml("nvmlSystemGetDriverVersion", [No, No], ["", ""], Some(0)),
    nvml("nvmlShutdown", [No, No], ["", ""], None),
    cuda(
        "cuDeviceTotalMem",
        [I32At(0, 0), Arg(1)],
        ["bytes", "device"],
        None,
    ),
    // libcudart's private entry points into the driver; a shim that emulates CUDA cannot
    // provide them, and cudart's initialisation fails here.
    cuda("cuGetExportTable", [U64At(0, 0), No], ["table", ""], None),
];

pub fn spec(id: u32) -> Option<&'static ApiSpec> {
    SPECS.get((id as usize).checked_sub(1)?)
}

/// Arguments saved at entry (the first five integer arguments).
pub const SAVED_ARGS: usize = 5;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ApiReturnPayload {
    /// 1-based index into `SPECS` (the cookie).
    pub id: u32,
    /// The return code (CUresult / nvmlReturn_t).
    pub ret: i32,
    pub outs: [u64; 2],
}

const _: () = assert!(size_of::<ApiReturnPayload>() == 24);
