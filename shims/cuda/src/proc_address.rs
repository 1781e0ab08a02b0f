//! `cuGetProcAddress` and `cuGetProcAddress_v2`: how libcudart finds every driver function.
//!
//! Callers ask for base names ("cuMemGetInfo") plus the CUDA version they were built against,
//! and expect the newest ABI of that name the version knows ("cuMemGetInfo_v2"). Emulated, the
//! shim answers with its hand-written exports only. In pass-through mode the real driver
//! answers, and its pointer is swapped for the shim's export of the same function, so those
//! calls keep passing through the shim (and `VGPU_FAIL`).

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use vgpu_shim_common::export::real_function;
use vgpu_shim_common::{Backend, PassThrough, RealLibrary};

use crate::ffi::*;

/// The result of looking a name up among the shim's exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found(*mut c_void),
    /// Only ABIs newer than the caller's CUDA version exist.
    VersionTooOld,
    NotFound,
}

/// The CUDA version (1000 × major + 10 × minor) whose headers map a base name to `export`.
fn introduced_in(export: &[u8]) -> c_int {
    match export {
        b"cuCtxDestroy_v2" => 4000,
        b"cuCtxCreate_v3" | b"cuDeviceGetUuid_v2" => 11040,
        b"cuGetProcAddress_v2" => 12000,
        _ if export.ends_with(b"_v2") => 3020,
        _ => 0,
    }
}

/// The CUDA version from which a base name means an ABI newer than any the shim exports
/// (`cuCtxCreate_v4` takes a `CUctxCreateParams*`): such callers must not get an older ABI.
fn superseded_in(base: &[u8]) -> Option<c_int> {
    match base {
        b"cuCtxCreate" => Some(12050),
        _ => None,
    }
}

/// Whether `name` already ends in `_v<digits>`.
fn has_version_suffix(name: &[u8]) -> bool {
    let digits = name.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && name
            .get(..name.len() - digits)
            .is_some_and(|base| base.ends_with(b"_v"))
}

/// Looks `symbol` up among the shim's exports for a caller built against `cuda_version`:
/// a suffixed name exactly; a base name as its newest variant that version knows, unless that
/// version expects a newer ABI than the shim has.
pub fn lookup(symbol: &[u8], cuda_version: c_int) -> Lookup {
    if has_version_suffix(symbol) {
        return crate::emulated_function(symbol).map_or(Lookup::NotFound, Lookup::Found);
    }
    if superseded_in(symbol).is_some_and(|version| cuda_version >= version) {
        return Lookup::NotFound;
    }
    let mut too_old = false;
    for suffix in [&b"_v3"[..], b"_v2", b""] {
        let name = [symbol, suffix].concat();
        let Some(address) = crate::emulated_function(&name) else {
            continue;
        };
        if cuda_version >= introduced_in(&name) {
            return Lookup::Found(address);
        }
        too_old = true;
    }
    if too_old {
        Lookup::VersionTooOld
    } else {
        Lookup::NotFound
    }
}

type GetProcAddress = unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64) -> CUresult;
type GetProcAddressV2 = unsafe extern "C" fn(
    *const c_char,
    *mut *mut c_void,
    c_int,
    u64,
    *mut CUdriverProcAddressQueryResult,
) -> CUresult;

/// `cuGetProcAddress_v2`. `symbol_status` may be NULL. Emulated, `flags` (default / per-thread
/// stream variants) make no difference: the shim emulates no stream functions.
///
/// # Safety
/// `symbol` must be NULL or NUL-terminated; `pfn` and `symbol_status` NULL or writable.
pub unsafe fn get_v2(
    pass_through: &PassThrough,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
    symbol_status: *mut CUdriverProcAddressQueryResult,
) -> CUresult {
    static REAL: OnceLock<Option<GetProcAddressV2>> = OnceLock::new();
    if let Backend::Real(library) = pass_through.backend() {
        // SAFETY: the real driver's cuGetProcAddress_v2 has this signature.
        let real = REAL.get_or_init(|| unsafe { real_function(library, "cuGetProcAddress_v2\0") });
        let Some(real) = real else {
            return CUDA_ERROR_NOT_FOUND;
        };
        // SAFETY: the caller's arguments, passed on untouched; then the caller's contract.
        return unsafe {
            let result = real(symbol, pfn, cuda_version, flags, symbol_status);
            through_the_shim(library, pfn);
            result
        };
    }
    // SAFETY: the caller's contract.
    let lookup = unsafe { local_lookup(symbol, pfn, cuda_version) };
    if !symbol_status.is_null() {
        let status = match lookup {
            Some(Lookup::Found(_)) => CU_GET_PROC_ADDRESS_SUCCESS,
            Some(Lookup::VersionTooOld) => CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
            _ => CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
        };
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { symbol_status.write(status) };
    }
    result_code(lookup)
}

/// `cuGetProcAddress` (CUDA 11.3–11.8 form, without the status out-parameter).
///
/// # Safety
/// As `get_v2`.
pub unsafe fn get_v1(
    pass_through: &PassThrough,
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
    flags: u64,
) -> CUresult {
    static REAL: OnceLock<Option<GetProcAddress>> = OnceLock::new();
    if let Backend::Real(library) = pass_through.backend() {
        // SAFETY: the real driver's cuGetProcAddress has this signature.
        let real = REAL.get_or_init(|| unsafe { real_function(library, "cuGetProcAddress\0") });
        let Some(real) = real else {
            return CUDA_ERROR_NOT_FOUND;
        };
        // SAFETY: the caller's arguments, passed on untouched; then the caller's contract.
        return unsafe {
            let result = real(symbol, pfn, cuda_version, flags);
            through_the_shim(library, pfn);
            result
        };
    }
    // SAFETY: the caller's contract.
    result_code(unsafe { local_lookup(symbol, pfn, cuda_version) })
}

/// Replaces the real driver's answer in `*pfn` with the shim's export of the same function, if
/// the pointer is one of the real library's exports; others stay as the driver gave them.
///
/// # Safety
/// `pfn` must be NULL or valid for reads and writes.
unsafe fn through_the_shim(library: &RealLibrary, pfn: *mut *mut c_void) {
    // SAFETY: the caller's contract.
    let Some(real) = unsafe { pfn.as_ref() }.copied() else {
        return;
    };
    if let Some(own) = real_name_of(library, real).and_then(crate::exported_function) {
        // SAFETY: non-NULL; writable by the caller's contract.
        unsafe { pfn.write(own) };
    }
}

/// The name of the real library's export at `address`. NVIDIA's exports have distinct
/// addresses, so an address names one function.
fn real_name_of(library: &RealLibrary, address: *mut c_void) -> Option<&'static [u8]> {
    static BY_ADDRESS: OnceLock<Vec<(usize, &'static str)>> = OnceLock::new();
    let table = BY_ADDRESS.get_or_init(|| {
        let names = crate::EMULATED_FUNCTIONS
            .iter()
            .chain(crate::FORWARDED_FUNCTIONS);
        let mut table: Vec<_> = names
            .filter_map(|&name| {
                let address = library.symbol(&CString::new(name).ok()?)?;
                Some((address.as_ptr() as usize, name))
            })
            .collect();
        table.sort_unstable();
        table
    });
    let index = table
        .binary_search_by_key(&(address as usize), |&(known, _)| known)
        .ok()?;
    Some(table[index].1.as_bytes())
}

/// Looks the caller's name up and stores the address (or NULL) in `*pfn`. `None` when either
/// pointer is NULL.
unsafe fn local_lookup(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    cuda_version: c_int,
) -> Option<Lookup> {
    if symbol.is_null() || pfn.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let lookup = lookup(unsafe { CStr::from_ptr(symbol) }.to_bytes(), cuda_version);
    let address = match lookup {
        Lookup::Found(address) => address,
        _ => ptr::null_mut(),
    };
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { pfn.write(address) };
    Some(lookup)
}

fn result_code(lookup: Option<Lookup>) -> CUresult {
    match lookup {
        None => CUDA_ERROR_INVALID_VALUE,
        Some(Lookup::Found(_)) => CUDA_SUCCESS,
        Some(_) => CUDA_ERROR_NOT_FOUND,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(symbol: &str, version: c_int) -> Option<*mut c_void> {
        match lookup(symbol.as_bytes(), version) {
            Lookup::Found(address) => Some(address),
            _ => None,
        }
    }

    #[test]
    fn base_names_resolve_to_the_newest_abi_the_caller_knows() {
        let v2 = crate::emulated_function(b"cuMemGetInfo_v2");
        assert!(v2.is_some());
        assert_eq!(found("cuMemGetInfo", 12000), v2);
        assert_eq!(
            found("cuDeviceTotalMem", 12000),
            crate::emulated_function(b"cuDeviceTotalMem_v2")
        );
        assert_eq!(
            found("cuDeviceTotalMem", 3000),
            crate::emulated_function(b"cuDeviceTotalMem")
        );
        assert_eq!(
            found("cuCtxCreate", 12000),
            crate::emulated_function(b"cuCtxCreate_v3")
        );
        assert_eq!(
            found("cuCtxCreate", 11000),
            crate::emulated_function(b"cuCtxCreate_v2")
        );
        assert_eq!(
            found("cuGetProcAddress", 11080),
            crate::emulated_function(b"cuGetProcAddress")
        );
        assert_eq!(
            found("cuGetProcAddress", 12000),
            crate::emulated_function(b"cuGetProcAddress_v2")
        );
        assert_eq!(found("cuInit", 0), crate::emulated_function(b"cuInit"));
    }

    #[test]
    fn suffixed_names_resolve_exactly() {
        assert_eq!(
            found("cuCtxCreate_v2", 13000),
            crate::emulated_function(b"cuCtxCreate_v2")
        );
        assert_eq!(lookup(b"cuMemGetInfo_v3", 13000), Lookup::NotFound);
    }

    #[test]
    fn unknown_names_and_old_versions() {
        assert_eq!(lookup(b"cuLaunchKernel", 13000), Lookup::NotFound);
        assert_eq!(lookup(b"", 13000), Lookup::NotFound);
        assert_eq!(lookup(b"_v", 13000), Lookup::NotFound);
        assert_eq!(lookup(b"cuCtxCreate", 3000), Lookup::VersionTooOld);
        assert_eq!(
            lookup(b"cuCtxCreate", 13000),
            Lookup::NotFound,
            "means cuCtxCreate_v4"
        );
    }

    #[test]
    fn version_suffixes() {
        assert!(has_version_suffix(b"cuCtxCreate_v3"));
        assert!(has_version_suffix(b"x_v12"));
        assert!(!has_version_suffix(b"cuInit"));
        assert!(!has_version_suffix(b"_v"));
        assert!(!has_version_suffix(b"cuFoo_x2"));
    }
}
