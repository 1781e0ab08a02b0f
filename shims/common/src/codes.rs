//! Status codes of the CUDA driver API (`CUresult`) and of NVML (`nvmlReturn_t`): the numbers of
//! NVIDIA's public cuda.h and nvml.h, the enumerator names, and the messages the shims report.
//! `VGPU_FAIL` accepts every name listed here.

use std::ffi::CStr;

/// One status code: its number, its C enumerator name and a one-line message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode {
    pub value: u32,
    pub name: &'static CStr,
    pub message: &'static CStr,
}

/// A string literal ending in NUL, as a `CStr`, checked at compile time.
const fn c_str(text_with_nul: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(text_with_nul.as_bytes()) {
        Ok(text) => text,
        Err(_) => panic!("status code text must end in its only NUL"),
    }
}

/// Declares each code once: a `pub const NAME: u32` plus its row in the module's `TABLE`.
macro_rules! status_codes {
    ($( $name:ident = $value:literal, $message:literal; )*) => {
        $( pub const $name: u32 = $value; )*

        /// Every code this module defines, in ascending order.
        pub const TABLE: &[super::StatusCode] = &[$(
            super::StatusCode {
                value: $value,
                name: super::c_str(concat!(stringify!($name), "\0")),
                message: super::c_str(concat!($message, "\0")),
            },
        )*];
    };
}

/// `CUresult` values.
pub mod cuda {
    status_codes! {
        CUDA_SUCCESS = 0, "no error";
        CUDA_ERROR_INVALID_VALUE = 1, "invalid argument";
        CUDA_ERROR_OUT_OF_MEMORY = 2, "out of memory";
        CUDA_ERROR_NOT_INITIALIZED = 3, "initialization error";
        CUDA_ERROR_DEINITIALIZED = 4, "driver shutting down";
        CUDA_ERROR_STUB_LIBRARY = 34, "CUDA driver is a stub library";
        CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER = 36, "call requires a newer driver";
        CUDA_ERROR_DEVICE_UNAVAILABLE = 46, "CUDA-capable device(s) busy or unavailable";
        CUDA_ERROR_NO_DEVICE = 100, "no CUDA-capable device is detected";
        CUDA_ERROR_INVALID_DEVICE = 101, "invalid device ordinal";
        CUDA_ERROR_DEVICE_NOT_LICENSED = 102, "device doesn't have valid grid license";
        CUDA_ERROR_INVALID_IMAGE = 200, "device kernel image is invalid";
        CUDA_ERROR_INVALID_CONTEXT = 201, "invalid device context";
        CUDA_ERROR_NO_BINARY_FOR_GPU = 209, "no kernel image is available for the device";
        CUDA_ERROR_UNSUPPORTED_LIMIT = 215, "limit is not supported on this architecture";
        CUDA_ERROR_INVALID_PTX = 218, "a PTX JIT compilation failed";
        CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222, "PTX compiled with an unsupported toolchain";
        CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY = 224, "execution affinity not supported";
        CUDA_ERROR_SHARED_OBJECT_INIT_FAILED = 303, "shared object initialization failed";
        CUDA_ERROR_OPERATING_SYSTEM = 304, "OS call failed or operation not supported on this OS";
        CUDA_ERROR_INVALID_HANDLE = 400, "invalid resource handle";
        CUDA_ERROR_ILLEGAL_STATE = 401, "the operation is not valid in the current state";
        CUDA_ERROR_NOT_FOUND = 500, "named symbol not found";
        CUDA_ERROR_NOT_READY = 600, "device not ready";
        CUDA_ERROR_ILLEGAL_ADDRESS = 700, "an illegal memory access was encountered";
        CUDA_ERROR_LAUNCH_FAILED = 719, "unspecified launch failure";
        CUDA_ERROR_NOT_PERMITTED = 800, "operation not permitted";
        CUDA_ERROR_NOT_SUPPORTED = 801, "operation not supported";
        CUDA_ERROR_SYSTEM_NOT_READY = 802, "system not yet initialized";
        CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803, "display driver and CUDA driver do not match";
        CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE = 804, "forward compatibility unsupported here";
        CUDA_ERROR_UNKNOWN = 999, "unknown error";
    }
}

/// `nvmlReturn_t` values.
pub mod nvml {
    status_codes! {
        NVML_SUCCESS = 0, "Success";
        NVML_ERROR_UNINITIALIZED = 1, "Uninitialized";
        NVML_ERROR_INVALID_ARGUMENT = 2, "Invalid Argument";
        NVML_ERROR_NOT_SUPPORTED = 3, "Not Supported";
        NVML_ERROR_NO_PERMISSION = 4, "Insufficient Permissions";
        NVML_ERROR_ALREADY_INITIALIZED = 5, "Already Initialized";
        NVML_ERROR_NOT_FOUND = 6, "Not Found";
        NVML_ERROR_INSUFFICIENT_SIZE = 7, "Insufficient Size";
        NVML_ERROR_INSUFFICIENT_POWER = 8, "Insufficient External Power";
        NVML_ERROR_DRIVER_NOT_LOADED = 9, "Driver Not Loaded";
        NVML_ERROR_TIMEOUT = 10, "Timeout";
        NVML_ERROR_IRQ_ISSUE = 11, "Interrupt Request Issue";
        NVML_ERROR_LIBRARY_NOT_FOUND = 12, "NVML Shared Library Not Found";
        NVML_ERROR_FUNCTION_NOT_FOUND = 13, "Function Not Found";
        NVML_ERROR_CORRUPTED_INFOROM = 14, "Corrupted infoROM";
        NVML_ERROR_GPU_IS_LOST = 15, "GPU is lost";
        NVML_ERROR_RESET_REQUIRED = 16, "GPU requires reset";
        NVML_ERROR_OPERATING_SYSTEM = 17, "GPU access blocked by the operating system";
        NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18, "Driver/library version mismatch";
        NVML_ERROR_IN_USE = 19, "In use by another client";
        NVML_ERROR_MEMORY = 20, "Insufficient Memory";
        NVML_ERROR_NO_DATA = 21, "No data";
        NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22, "vGPU operation not available while ECC is enabled";
        NVML_ERROR_INSUFFICIENT_RESOURCES = 23, "Insufficient Resources";
        NVML_ERROR_FREQ_NOT_SUPPORTED = 24, "Frequency Not Supported";
        NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25, "Argument Version Mismatch";
        NVML_ERROR_DEPRECATED = 26, "Deprecated";
        NVML_ERROR_NOT_READY = 27, "Not Ready";
        NVML_ERROR_GPU_NOT_FOUND = 28, "GPU Not Found";
        NVML_ERROR_INVALID_STATE = 29, "Invalid State";
        NVML_ERROR_UNKNOWN = 999, "Unknown Error";
    }
}

/// The row of `table` for `value`.
pub fn find(table: &'static [StatusCode], value: u32) -> Option<&'static StatusCode> {
    table.iter().find(|code| code.value == value)
}

/// The number behind a CUDA or NVML enumerator name, e.g. `CUDA_ERROR_NO_DEVICE` → 100.
/// Case is ignored.
pub fn value_of(name: &str) -> Option<u32> {
    cuda::TABLE
        .iter()
        .chain(nvml::TABLE)
        .find(|code| code.name.to_bytes().eq_ignore_ascii_case(name.as_bytes()))
        .map(|code| code.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_without_duplicates() {
        for table in [cuda::TABLE, nvml::TABLE] {
            assert!(table.windows(2).all(|pair| pair[0].value < pair[1].value));
            assert!(table.iter().all(|code| !code.message.is_empty()));
        }
    }

    #[test]
    fn names_resolve_to_numbers() {
        assert_eq!(value_of("CUDA_ERROR_NO_DEVICE"), Some(100));
        assert_eq!(value_of("cuda_error_invalid_device"), Some(101));
        assert_eq!(value_of("NVML_ERROR_DRIVER_NOT_LOADED"), Some(9));
        assert_eq!(value_of("CUDA_ERROR_NOT_A_THING"), None);
        assert_eq!(
            find(cuda::TABLE, 500).map(|c| c.name),
            Some(c"CUDA_ERROR_NOT_FOUND")
        );
        assert_eq!(
            find(nvml::TABLE, 7).map(|c| c.message),
            Some(c"Insufficient Size")
        );
    }
}
