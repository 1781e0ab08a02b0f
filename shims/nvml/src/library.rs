//! NVML's initialisation count: every successful init adds one, every shutdown removes one, and
//! device queries work while it is above zero.

use std::sync::atomic::{AtomicU32, Ordering};

use vgpu_shim_common::Config;

use crate::ffi::*;

#[derive(Debug, Default)]
pub struct InitCount(AtomicU32);

impl InitCount {
    pub const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    pub fn acquire(&self) {
        // Saturating: a count stuck at u32::MAX only means shutdown never reaches zero.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(1))
            });
    }

    /// Fails with `NVML_ERROR_UNINITIALIZED` when the count is already zero.
    pub fn release(&self) -> Outcome {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map(drop)
            .map_err(|_| NVML_ERROR_UNINITIALIZED)
    }

    pub fn is_held(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

static INIT_COUNT: InitCount = InitCount::new();

/// `nvmlInit*`. A configured pass-through library that failed to load makes it fail as a
/// missing NVML would.
pub fn init(pass_through_unavailable: bool) -> Outcome {
    if pass_through_unavailable {
        return Err(NVML_ERROR_LIBRARY_NOT_FOUND);
    }
    INIT_COUNT.acquire();
    Ok(())
}

pub fn shutdown() -> Outcome {
    INIT_COUNT.release()
}

/// The process's configuration, while NVML is initialised.
pub fn initialized() -> Outcome<&'static Config> {
    if INIT_COUNT.is_held() {
        Ok(Config::get())
    } else {
        Err(NVML_ERROR_UNINITIALIZED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inits_and_shutdowns() {
        let count = InitCount::new();
        assert!(!count.is_held());
        assert_eq!(count.release(), Err(NVML_ERROR_UNINITIALIZED));
        count.acquire();
        count.acquire();
        assert_eq!(count.release(), Ok(()));
        assert!(count.is_held(), "one init still outstanding");
        assert_eq!(count.release(), Ok(()));
        assert!(!count.is_held());
        assert_eq!(count.release(), Err(NVML_ERROR_UNINITIALIZED));
    }
}
