//! `cuGetErrorString` / `cuGetErrorName`.

use std::ffi::{CStr, c_char};
use std::ptr;

use vgpu_cuda::ffi::*;
use vgpu_cuda::*;

fn text(
    get: unsafe extern "C" fn(CUresult, *mut *const c_char) -> CUresult,
    code: CUresult,
) -> (CUresult, Option<String>) {
    let mut text: *const c_char = ptr::dangling::<c_char>();
    let result = unsafe { get(code, &mut text) };
    let text = (!text.is_null()).then(|| {
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    });
    (result, text)
}

#[test]
fn every_documented_code_has_a_name_and_a_message() {
    for code in [
        0, 1, 2, 3, 4, 34, 100, 101, 200, 201, 215, 222, 303, 400, 500, 801, 999,
    ] {
        let (result, name) = text(cuGetErrorName, code);
        assert_eq!(result, CUDA_SUCCESS, "{code}");
        assert!(name.is_some_and(|name| name.starts_with("CUDA_")), "{code}");
        let (result, message) = text(cuGetErrorString, code);
        assert_eq!(result, CUDA_SUCCESS, "{code}");
        assert!(message.is_some_and(|message| !message.is_empty()), "{code}");
    }
}

#[test]
fn known_texts() {
    assert_eq!(
        text(cuGetErrorName, 100).1.as_deref(),
        Some("CUDA_ERROR_NO_DEVICE")
    );
    assert_eq!(
        text(cuGetErrorString, 100).1.as_deref(),
        Some("no CUDA-capable device is detected")
    );
    assert_eq!(text(cuGetErrorName, 0).1.as_deref(), Some("CUDA_SUCCESS"));
}

#[test]
fn unknown_codes_give_null() {
    assert_eq!(
        text(cuGetErrorString, 12345),
        (CUDA_ERROR_INVALID_VALUE, None)
    );
    assert_eq!(
        text(cuGetErrorName, 35),
        (CUDA_ERROR_INVALID_VALUE, None),
        "35 is a runtime-API code only"
    );
    assert_eq!(
        unsafe { cuGetErrorName(0, ptr::null_mut()) },
        CUDA_ERROR_INVALID_VALUE
    );
}
