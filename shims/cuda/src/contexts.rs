//! Contexts: opaque handles tied to a device, and the calling thread's current context.
//!
//! A context's handle is the address of a small leaked allocation that is never freed, so a
//! destroyed handle can never come back to life as the handle of a newer context. The handle is
//! never dereferenced; the registry maps it to its device.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint};
use std::ptr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use crate::ffi::*;

/// Flag bits `cuCtxCreate` knows: scheduling (0x07), MAP_HOST, LMEM_RESIZE_TO_MAX,
/// COREDUMP_ENABLE, USER_COREDUMP_ENABLE, SYNC_MEMOPS.
const KNOWN_FLAGS: c_uint = 0xff;

thread_local! {
    static CURRENT: Cell<CUcontext> = const { Cell::new(ptr::null_mut()) };
}

/// Live contexts: handle address → CUDA ordinal.
fn registry() -> MutexGuard<'static, HashMap<usize, CUdevice>> {
    static LIVE: OnceLock<Mutex<HashMap<usize, CUdevice>>> = OnceLock::new();
    let live = LIVE.get_or_init(Mutex::default);
    // The map stays consistent even if a holder panicked: every update is a single call.
    live.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn validate_flags(flags: c_uint) -> Outcome {
    if flags & !KNOWN_FLAGS == 0 {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

/// `cuCtxCreate_v3`'s affinity parameters are accepted and ignored; only their shape is checked.
pub fn validate_affinity(params: *const CUexecAffinityParam, count: c_int) -> Outcome {
    match count {
        0 => Ok(()),
        1.. if !params.is_null() => Ok(()),
        _ => Err(CUDA_ERROR_INVALID_VALUE),
    }
}

/// Creates a context on `device` and makes it current on this thread.
pub fn create(device: CUdevice) -> CUcontext {
    let handle = Box::into_raw(Box::new(device)).cast();
    registry().insert(handle as usize, device);
    CURRENT.set(handle);
    handle
}

pub fn destroy(context: CUcontext) -> Outcome {
    if context.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    registry()
        .remove(&(context as usize))
        .ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
    if CURRENT.get() == context {
        CURRENT.set(ptr::null_mut());
    }
    Ok(())
}

/// `cuCtxSetCurrent`: NULL unbinds the thread's context.
pub fn set_current(context: CUcontext) -> Outcome {
    if !context.is_null() && !registry().contains_key(&(context as usize)) {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    CURRENT.set(context);
    Ok(())
}

/// The calling thread's current context, or NULL (also when another thread destroyed it).
pub fn current() -> CUcontext {
    let context = CURRENT.get();
    if registry().contains_key(&(context as usize)) {
        context
    } else {
        ptr::null_mut()
    }
}

/// The device of the calling thread's current context.
pub fn current_device() -> Outcome<CUdevice> {
    let context = CURRENT.get();
    registry()
        .get(&(context as usize))
        .copied()
        .ok_or(CUDA_ERROR_INVALID_CONTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_on_one_thread() {
        let context = create(0);
        assert!(!context.is_null());
        assert_eq!(current(), context);
        assert_eq!(current_device(), Ok(0));
        assert_eq!(set_current(ptr::null_mut()), Ok(()));
        assert_eq!(current_device(), Err(CUDA_ERROR_INVALID_CONTEXT));
        assert_eq!(set_current(context), Ok(()));
        assert_eq!(destroy(context), Ok(()));
        assert!(current().is_null());
        assert_eq!(destroy(context), Err(CUDA_ERROR_INVALID_CONTEXT));
        assert_eq!(set_current(context), Err(CUDA_ERROR_INVALID_CONTEXT));
        assert_eq!(destroy(ptr::null_mut()), Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn current_context_is_per_thread() {
        let context = create(1);
        let address = context as usize;
        std::thread::spawn(move || {
            let context = address as CUcontext;
            assert!(current().is_null());
            assert_eq!(current_device(), Err(CUDA_ERROR_INVALID_CONTEXT));
            assert_eq!(set_current(context), Ok(()));
            assert_eq!(current_device(), Ok(1));
        })
        .join()
        .expect("thread");
        assert_eq!(destroy(context), Ok(()));
    }

    #[test]
    fn handles_are_never_reused() {
        let first = create(0);
        destroy(first).expect("destroy");
        let second = create(0);
        assert_ne!(first, second);
        destroy(second).expect("destroy");
    }

    #[test]
    fn flag_and_affinity_shapes() {
        assert_eq!(validate_flags(0x04), Ok(()));
        assert_eq!(validate_flags(0x100), Err(CUDA_ERROR_INVALID_VALUE));
        let param = CUexecAffinityParam {
            kind: 0,
            sm_count: 66,
        };
        assert_eq!(validate_affinity(ptr::null(), 0), Ok(()));
        assert_eq!(validate_affinity(&param, 1), Ok(()));
        assert_eq!(
            validate_affinity(ptr::null(), 1),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(validate_affinity(&param, -1), Err(CUDA_ERROR_INVALID_VALUE));
    }
}
