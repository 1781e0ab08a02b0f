//! The exported C functions: the macro that declares each one once, and its runtime helpers.
//!
//! Every generated function, in order:
//! 1. consults `VGPU_FAIL` by its own exported name (return a code, or hang);
//! 2. in pass-through mode (`forwarded` functions only) calls the same-named symbol of the real
//!    library with the same arguments, resolved once and cached (missing: `missing_symbol`);
//! 3. otherwise runs the emulated body.
//!
//! A panic never crosses the C boundary: it becomes the crate's "unknown error" code.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};

use crate::config::Config;
use crate::fail::FailAction;
use crate::passthrough::RealLibrary;

/// Runs `call`, turning a panic into `on_panic`.
pub fn guard<R>(on_panic: R, call: impl FnOnce() -> R) -> R {
    panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or(on_panic)
}

/// The code `VGPU_FAIL` makes `symbol` return, if any; a `hang` rule never returns.
pub fn injected_failure(symbol: &str) -> Option<u32> {
    match Config::get().fail.action_for(symbol)? {
        FailAction::Return(code) => Some(code),
        FailAction::Hang => hang_forever(),
    }
}

/// The real library's function `name_with_nul` (a name ending in NUL), as the function
/// pointer type `F`.
///
/// # Safety
/// `F` must be the `unsafe extern "C" fn` type of the symbol's C signature.
pub unsafe fn real_function<F: Copy>(library: &RealLibrary, name_with_nul: &str) -> Option<F> {
    const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
    let address = library.function(name_with_nul)?.as_ptr();
    // SAFETY: same size, checked above; the caller vouches for the signature.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&address) })
}

/// Blocks the calling thread for good, as a wedged driver call would.
pub fn hang_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Declares a shim's exported C functions.
///
/// ```text
/// export_c_functions! {
///     pass_through: PASS_THROUGH,            // a static vgpu_shim_common::PassThrough
///     missing_symbol: CUDA_ERROR_NOT_FOUND,  // when the real library lacks the symbol
///     internal_error: CUDA_ERROR_UNKNOWN,    // when the body panics
///     forwarded {                            // pass-through forwards these untouched
///         fn cuInit(flags: c_uint) -> CUresult { /* emulation */ }
///     }
///     routed_by_body {                       // the body chooses where calls go itself
///         fn cuGetProcAddress_v2(...) -> CUresult { ... }
///     }
/// }
/// ```
///
/// Every function returns a status code (`u32`). Besides the functions it generates
/// `EMULATED_FUNCTIONS` (their names) and `emulated_function(name)` (their addresses).
#[macro_export]
macro_rules! export_c_functions {
    (
        pass_through: $pass_through:ident,
        missing_symbol: $missing:expr,
        internal_error: $internal:expr,
        forwarded { $(
            $(#[$f_attr:meta])*
            fn $f_name:ident($($f_arg:ident: $f_ty:ty),* $(,)?) -> $f_ret:ty $f_body:block
        )* }
        routed_by_body { $(
            $(#[$r_attr:meta])*
            fn $r_name:ident($($r_arg:ident: $r_ty:ty),* $(,)?) -> $r_ret:ty $r_body:block
        )* }
    ) => {
        $(
            $crate::export_c_functions!(
                @entry [$(#[$f_attr])*] $f_name($($f_arg: $f_ty),*) -> $f_ret, $internal, {
                    $crate::export_c_functions!(
                        @forward $pass_through, $missing, $f_name($($f_arg: $f_ty),*) -> $f_ret
                    );
                    $f_body
                }
            );
        )*
        $(
            $crate::export_c_functions!(
                @entry [$(#[$r_attr])*] $r_name($($r_arg: $r_ty),*) -> $r_ret, $internal, $r_body
            );
        )*
        $crate::export_c_functions!(@table $($f_name)* $($r_name)*);
    };

    (
        @entry [$($attr:tt)*] $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty,
        $internal:expr, $body:block
    ) => {
        $($attr)*
        ///
        /// # Safety
        /// A C entry point: pointer arguments must be valid as NVIDIA's documentation requires.
        #[allow(non_snake_case)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            $crate::export::guard($internal, move || -> $ret {
                let injected = $crate::export::injected_failure(::core::stringify!($name));
                if let ::core::option::Option::Some(code) = injected {
                    return code;
                }
                $body
            })
        }
    };

    (
        @forward $pass_through:ident, $missing:expr, $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty
    ) => {
        if let $crate::Backend::Real(library) = $pass_through.backend() {
            type Real = unsafe extern "C" fn($($ty),*) -> $ret;
            static REAL: ::std::sync::OnceLock<::core::option::Option<Real>> =
                ::std::sync::OnceLock::new();
            let name = ::core::concat!(::core::stringify!($name), "\0");
            // SAFETY: the real library exports this name with this very C signature.
            let real =
                *REAL.get_or_init(|| unsafe { $crate::export::real_function(library, name) });
            return match real {
                // SAFETY: the caller's arguments, passed on untouched to the same function.
                ::core::option::Option::Some(real) => unsafe { real($($arg),*) },
                ::core::option::Option::None => $missing,
            };
        }
    };

    (@table $($name:ident)*) => {
        /// Names of the hand-written C functions, which emulate in emulated mode.
        pub const EMULATED_FUNCTIONS: &[&str] = &[$(::core::stringify!($name)),*];

        /// The address of the hand-written C function called `name`.
        pub fn emulated_function(name: &[u8]) -> ::core::option::Option<*mut ::core::ffi::c_void> {
            $(
                if name == ::core::stringify!($name).as_bytes() {
                    let address = $name as *const () as *mut ::core::ffi::c_void;
                    return ::core::option::Option::Some(address);
                }
            )*
            ::core::option::Option::None
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn guard_turns_panics_into_a_code() {
        assert_eq!(guard(999, || 0), 0);
        assert_eq!(guard(999, || panic!("boom")), 999);
    }

    #[test]
    fn symbols_without_rules_proceed() {
        // The test process has no VGPU_FAIL rule for this name.
        assert_eq!(injected_failure("vgpuNoSuchFunction"), None);
    }

    #[test]
    fn hang_does_not_return() {
        let (alive, watcher) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _alive = alive; // dropped, disconnecting the channel, only if the thread ends
            hang_forever()
        });
        let outcome = watcher.recv_timeout(Duration::from_millis(200));
        assert_eq!(outcome, Err(mpsc::RecvTimeoutError::Timeout));
    }
}
