//! The generated exports: every name of the real library's list (`exports.txt`) that a shim does
//! not write by hand, declared by `forward_functions!` from its build script's output.
//!
//! Each export is one instruction, a jump through its slot, so whatever the signature (stack
//! arguments, floating point, varargs) the target sees the caller's registers and stack. A slot
//! starts at a resolver that saves the argument registers, asks `resolve` where the name goes and
//! restores them: then it jumps to the real function (kept in the slot, so later calls go
//! straight there), or returns a status code to the caller (`VGPU_FAIL`, emulated mode, a name
//! the real library lacks), asking again on every call. x86_64 Linux only; elsewhere the shim
//! exports only its hand-written functions.

use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::export::{guard, injected_failure};
use crate::passthrough::{Backend, PassThrough};

/// How a shim's generated exports answer when they do not forward.
#[derive(Debug)]
pub struct Policy {
    pub pass_through: &'static PassThrough,
    /// In emulated mode (and when the pass-through library failed to load).
    pub not_supported: u32,
    /// When the real library lacks the name.
    pub missing_symbol: u32,
    /// When resolving panics.
    pub internal_error: u32,
}

/// A shim's generated exports: names (each ending in NUL) and slots, by index.
#[doc(hidden)]
#[derive(Debug)]
pub struct Table {
    pub policy: &'static Policy,
    pub names: &'static [&'static str],
    pub slots: &'static [AtomicPtr<c_void>],
}

/// Where a call goes: `target`, or back to the caller with `code` when `target` is NULL.
#[doc(hidden)]
#[repr(C)]
#[derive(Debug, PartialEq, Eq)]
pub struct Resolution {
    pub target: *mut c_void,
    pub code: u64,
}

impl Resolution {
    fn code(code: u32) -> Self {
        Self {
            target: std::ptr::null_mut(),
            code: code.into(),
        }
    }
}

impl Table {
    /// Where a call of export `index` goes. The slot keeps a real function only: `VGPU_FAIL` is
    /// read once per process, so a name without a rule never gets one.
    pub fn resolve(&self, index: usize) -> Resolution {
        guard(Resolution::code(self.policy.internal_error), || {
            self.resolve_with(index, || self.policy.pass_through.backend())
        })
    }

    /// As `resolve`; `backend` is asked only past `VGPU_FAIL`, which must do nothing else.
    fn resolve_with<'a>(&self, index: usize, backend: impl FnOnce() -> Backend<'a>) -> Resolution {
        let name = self.names[index];
        if let Some(code) = injected_failure(name.trim_end_matches('\0')) {
            return Resolution::code(code);
        }
        let Backend::Real(library) = backend() else {
            return Resolution::code(self.policy.not_supported);
        };
        let Some(real) = library.function(name) else {
            return Resolution::code(self.policy.missing_symbol);
        };
        self.slots[index].store(real.as_ptr(), Ordering::Release);
        Resolution {
            target: real.as_ptr(),
            code: 0,
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" fn resolve(table: &Table, index: usize) -> Resolution {
    table.resolve(index)
}

/// Entered by a slot's first resolver with the table in r10 and the index in r11 (neither
/// carries C arguments), and the caller's arguments untouched.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[doc(hidden)]
#[unsafe(naked)]
pub unsafe extern "C" fn resolve_and_jump() {
    core::arch::naked_asm!(
        // The integer argument registers, and rax (the vector-register count of varargs).
        "push rdi",
        "push rsi",
        "push rdx",
        "push rcx",
        "push r8",
        "push r9",
        "push rax",
        // Seven pushes after the return address: the stack is 16-byte aligned again.
        "sub rsp, 128",
        "movdqu [rsp], xmm0",
        "movdqu [rsp + 16], xmm1",
        "movdqu [rsp + 32], xmm2",
        "movdqu [rsp + 48], xmm3",
        "movdqu [rsp + 64], xmm4",
        "movdqu [rsp + 80], xmm5",
        "movdqu [rsp + 96], xmm6",
        "movdqu [rsp + 112], xmm7",
        "mov rdi, r10",
        "mov rsi, r11",
        "call {resolve}",
        "movdqu xmm0, [rsp]",
        "movdqu xmm1, [rsp + 16]",
        "movdqu xmm2, [rsp + 32]",
        "movdqu xmm3, [rsp + 48]",
        "movdqu xmm4, [rsp + 64]",
        "movdqu xmm5, [rsp + 80]",
        "movdqu xmm6, [rsp + 96]",
        "movdqu xmm7, [rsp + 112]",
        "add rsp, 128",
        "test rax, rax",
        "jz 2f",
        "mov r11, rax",
        "pop rax",
        "pop r9",
        "pop r8",
        "pop rcx",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "jmp r11",
        // No target: return the code to the caller.
        "2:",
        "mov eax, edx",
        "add rsp, 56",
        "ret",
        resolve = sym resolve,
    );
}

/// Declares the generated exports; a shim's build script writes the invocation from its
/// `exports.txt`, numbering the names it does not define itself:
///
/// ```text
/// forward_functions! { policy: crate::FORWARDING, functions { 0 cuArrayCreate 1 cuArrayDestroy } }
/// ```
///
/// Besides the exports it defines `FORWARDED_FUNCTIONS` (their names) and
/// `forwarded_function(name)` (their addresses). With no functions (other targets) it defines
/// only those two.
#[macro_export]
macro_rules! forward_functions {
    (policy: $policy:path, functions {}) => {
        // The policy has nothing to govern here.
        const _: () = {
            let _ = &$policy;
        };

        /// Names of the generated exports: none on this target.
        pub const FORWARDED_FUNCTIONS: &[&str] = &[];

        /// The address of the generated export `name`: none on this target.
        pub fn forwarded_function(_name: &[u8]) -> Option<*mut ::core::ffi::c_void> {
            None
        }
    };
    (policy: $policy:path, functions { $($index:literal $name:ident)+ }) => {
        /// Names of the generated exports: the real library's other functions.
        pub const FORWARDED_FUNCTIONS: &[&str] = &[$(::core::stringify!($name)),+];

        /// The address of the generated export `name`.
        pub fn forwarded_function(name: &[u8]) -> Option<*mut ::core::ffi::c_void> {
            let index = FORWARDED_FUNCTIONS.iter().position(|known| known.as_bytes() == name)?;
            Some(forwarded::ENTRIES[index] as *mut ::core::ffi::c_void)
        }

        #[allow(non_snake_case)]
        mod forwarded {
            use ::core::ffi::c_void;
            use ::core::sync::atomic::AtomicPtr;

            const COUNT: usize = super::FORWARDED_FUNCTIONS.len();

            static TABLE: $crate::forward::Table = $crate::forward::Table {
                policy: &$policy,
                names: &[$(::core::concat!(::core::stringify!($name), "\0")),+],
                slots: &SLOTS,
            };

            static SLOTS: [AtomicPtr<c_void>; COUNT] =
                [$(AtomicPtr::new(first_call::$name as *mut c_void)),+];

            pub(super) static ENTRIES: [unsafe extern "C" fn(); COUNT] = [$($name),+];

            $(
                /// A forwarding entry: its C signature is the real library's.
                ///
                /// # Safety
                /// As the real function's.
                #[unsafe(naked)]
                #[unsafe(no_mangle)]
                pub unsafe extern "C" fn $name() {
                    ::core::arch::naked_asm!(
                        "jmp qword ptr [rip + {slots} + {offset}]",
                        slots = sym SLOTS,
                        offset = const 8 * $index,
                    );
                }
            )+

            /// Each slot's first target: says which export was called, for `resolve_and_jump`.
            mod first_call {
                $(
                    #[unsafe(naked)]
                    pub(super) unsafe extern "C" fn $name() {
                        ::core::arch::naked_asm!(
                            "lea r10, [rip + {table}]",
                            "mov r11d, {index}",
                            "jmp {resolve}",
                            table = sym super::TABLE,
                            index = const $index,
                            resolve = sym $crate::forward::resolve_and_jump,
                        );
                    }
                )+
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Api;
    use crate::config::Config;

    static POLICY: Policy = Policy {
        pass_through: &PASS_THROUGH,
        not_supported: 801,
        missing_symbol: 500,
        internal_error: 999,
    };
    static PASS_THROUGH: PassThrough = PassThrough::new(Api::Cuda);

    fn table() -> Table {
        let slots = [(); 2].map(|()| AtomicPtr::new(std::ptr::null_mut()));
        Table {
            policy: &POLICY,
            names: &["getpid\0", "vgpu_no_such_function\0"],
            slots: Box::leak(Box::new(slots)),
        }
    }

    #[test]
    fn emulated_mode_is_not_supported() {
        let table = table();
        assert_eq!(
            table.resolve_with(0, || Backend::Emulated),
            Resolution::code(801)
        );
        assert_eq!(
            table.resolve_with(0, || Backend::Unavailable),
            Resolution::code(801)
        );
        assert!(table.slots[0].load(Ordering::Relaxed).is_null(), "not kept");
    }

    #[test]
    fn pass_through_finds_and_keeps_the_real_function() {
        let config = Config::from_lookup(|name| {
            (name == "VGPU_CUDA_PASSTHROUGH").then(|| "libc.so.6".to_owned())
        });
        let backend = PASS_THROUGH.backend_with(&config);
        let Backend::Real(library) = backend else {
            panic!("libc loads");
        };
        let getpid = library.symbol(c"getpid").map(|f| f.as_ptr());
        let table = table();
        assert_eq!(Some(table.resolve_with(0, || backend).target), getpid);
        assert_eq!(Some(table.slots[0].load(Ordering::Relaxed)), getpid);
        assert_eq!(table.resolve_with(1, || backend), Resolution::code(500));
        assert!(table.slots[1].load(Ordering::Relaxed).is_null());
    }
}
