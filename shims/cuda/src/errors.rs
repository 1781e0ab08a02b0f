//! `cuGetErrorString` and `cuGetErrorName`: static strings for every code in the shared table.

use std::ffi::{CStr, c_char};
use std::ptr;

use vgpu_shim_common::codes::{self, StatusCode};

use crate::ffi::*;

/// Stores the chosen text of `code` in `*text`; unknown codes store NULL and fail, as the
/// driver does.
///
/// # Safety
/// `text` must be NULL or valid for a write of a pointer.
pub unsafe fn describe(
    code: CUresult,
    text: *mut *const c_char,
    pick: fn(&StatusCode) -> &'static CStr,
) -> Outcome {
    let found = codes::find(codes::cuda::TABLE, code).map(pick);
    // SAFETY: the caller's contract; `store` rejects NULL.
    unsafe { store(text, found.map_or(ptr::null(), CStr::as_ptr)) }?;
    found.map(drop).ok_or(CUDA_ERROR_INVALID_VALUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(code: CUresult) -> (Outcome, Option<&'static CStr>) {
        let mut text = ptr::null();
        let outcome = unsafe { describe(code, &mut text, |c| c.name) };
        (
            outcome,
            (!text.is_null()).then(|| unsafe { CStr::from_ptr(text) }),
        )
    }

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(name_of(101), (Ok(()), Some(c"CUDA_ERROR_INVALID_DEVICE")));
        assert_eq!(name_of(12345), (Err(CUDA_ERROR_INVALID_VALUE), None));
        let null = unsafe { describe(0, ptr::null_mut(), |c| c.message) };
        assert_eq!(null, Err(CUDA_ERROR_INVALID_VALUE));
    }
}
