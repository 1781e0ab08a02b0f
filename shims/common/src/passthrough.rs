//! Pass-through: forwarding calls to the real NVIDIA library that `VGPU_CUDA_PASSTHROUGH` or
//! `VGPU_NVML_PASSTHROUGH` names, so failures can be injected in front of a real GPU.

use std::ffi::{CStr, c_void};
use std::io::Write;
use std::ptr::NonNull;
use std::sync::OnceLock;

use crate::config::Config;

/// RTLD_DEEPBIND makes the real library resolve its own symbols first instead of binding to
/// this shim's identically named exports, which would loop straight back here.
#[cfg(target_env = "gnu")]
const OPEN_FLAGS: libc::c_int = libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_DEEPBIND;
#[cfg(not(target_env = "gnu"))]
const OPEN_FLAGS: libc::c_int = libc::RTLD_NOW | libc::RTLD_LOCAL;

/// A library opened with `dlopen`. It is never closed: callers keep its function pointers.
#[derive(Debug)]
pub struct RealLibrary {
    handle: NonNull<c_void>,
}

// SAFETY: a dlopen handle is a process-wide token, and dlsym may be called from any thread.
unsafe impl Send for RealLibrary {}
// SAFETY: as above; the handle is never mutated.
unsafe impl Sync for RealLibrary {}

impl RealLibrary {
    /// Opens `path`; the error is `dlerror()`'s text.
    pub fn open(path: &CStr) -> Result<Self, String> {
        // SAFETY: `path` is NUL-terminated; the flags are valid dlopen flags.
        let handle = unsafe { libc::dlopen(path.as_ptr(), OPEN_FLAGS) };
        let Some(handle) = NonNull::new(handle) else {
            return Err(last_dl_error());
        };
        if is_this_library(handle) {
            // SAFETY: balances the dlopen above; the shim itself stays loaded.
            unsafe { libc::dlclose(handle.as_ptr()) };
            return Err("that is this shim itself, not the real library".to_owned());
        }
        Ok(Self { handle })
    }

    /// The address of the symbol `name`.
    pub fn symbol(&self, name: &CStr) -> Option<NonNull<c_void>> {
        // SAFETY: the handle is open for the life of the process; `name` is NUL-terminated.
        NonNull::new(unsafe { libc::dlsym(self.handle.as_ptr(), name.as_ptr()) })
    }

    /// Like `symbol`, for a name that ends in NUL (built with `concat!` by the export macro).
    pub fn function(&self, name_with_nul: &str) -> Option<NonNull<c_void>> {
        CStr::from_bytes_with_nul(name_with_nul.as_bytes())
            .ok()
            .and_then(|name| self.symbol(name))
    }
}

fn last_dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated, thread-local message.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "unknown dlopen error".to_owned();
    }
    // SAFETY: checked non-NULL above.
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

/// Whether `handle` is the object this code is linked into: a pass-through path that points
/// at the shim (or a bare name that matches its SONAME) would forward every call to itself.
fn is_this_library(handle: NonNull<c_void>) -> bool {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut here: libc::Dl_info = unsafe { std::mem::zeroed() };
    let address = is_this_library as *const () as *const c_void;
    // SAFETY: `address` is code in this object; `here` is a valid out-parameter.
    if unsafe { libc::dladdr(address, &mut here) } == 0 || here.dli_fname.is_null() {
        return false;
    }
    // SAFETY: RTLD_NOLOAD only looks up an object that is already loaded.
    let own = unsafe { libc::dlopen(here.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if own.is_null() {
        return false;
    }
    // SAFETY: balances the RTLD_NOLOAD dlopen, which took a reference.
    unsafe { libc::dlclose(own) };
    own == handle.as_ptr()
}

/// Which NVIDIA library a shim stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Cuda,
    Nvml,
}

impl Api {
    /// The prefix of the shim's messages.
    pub fn shim_name(self) -> &'static str {
        match self {
            Api::Cuda => "vgpu-cuda",
            Api::Nvml => "vgpu-nvml",
        }
    }

    fn passthrough_path(self, config: &Config) -> Option<&CStr> {
        match self {
            Api::Cuda => config.cuda_passthrough.as_deref(),
            Api::Nvml => config.nvml_passthrough.as_deref(),
        }
    }
}

/// Where a shim's calls go.
#[derive(Debug, Clone, Copy)]
pub enum Backend<'a> {
    /// No pass-through configured: the virtual GPU answers.
    Emulated,
    /// Forward to this library.
    Real(&'a RealLibrary),
    /// A pass-through library was configured but could not be loaded: initialisation fails.
    Unavailable,
}

/// A shim's pass-through library, loaded on first use.
#[derive(Debug)]
pub struct PassThrough {
    api: Api,
    library: OnceLock<Option<RealLibrary>>,
}

impl PassThrough {
    pub const fn new(api: Api) -> Self {
        Self {
            api,
            library: OnceLock::new(),
        }
    }

    /// The backend for this process's configuration.
    pub fn backend(&self) -> Backend<'_> {
        self.backend_with(Config::get())
    }

    /// The backend for `config`. The library is loaded once; a failure prints one line.
    pub fn backend_with(&self, config: &Config) -> Backend<'_> {
        let Some(path) = self.api.passthrough_path(config) else {
            return Backend::Emulated;
        };
        let library = self.library.get_or_init(|| {
            RealLibrary::open(path)
                .map_err(|error| {
                    let (shim, path) = (self.api.shim_name(), path.to_string_lossy());
                    // Nowhere to report a failing stderr; initialisation fails either way.
                    let _ = writeln!(
                        std::io::stderr(),
                        "{shim}: cannot load pass-through library {path}: {error}"
                    );
                })
                .ok()
        });
        library.as_ref().map_or(Backend::Unavailable, Backend::Real)
    }

    /// Whether a configured pass-through library failed to load.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.backend(), Backend::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_cuda_path(path: &str) -> Config {
        let path = path.to_owned();
        Config::from_lookup(|name| (name == "VGPU_CUDA_PASSTHROUGH").then(|| path.clone()))
    }

    #[test]
    fn opens_a_real_library_and_finds_symbols() {
        let library = RealLibrary::open(c"libc.so.6").expect("libc loads");
        assert!(library.symbol(c"getpid").is_some());
        assert!(library.function("getpid\0").is_some());
        assert!(
            library.function("getpid").is_none(),
            "names must carry their NUL"
        );
        assert!(library.symbol(c"vgpu_no_such_symbol").is_none());
    }

    #[test]
    fn a_missing_library_reports_dlerror() {
        let error = RealLibrary::open(c"/nonexistent/libcuda.so.1").unwrap_err();
        assert!(error.contains("/nonexistent/libcuda.so.1"), "{error}");
    }

    #[test]
    fn backend_follows_the_configuration() {
        let emulated = PassThrough::new(Api::Cuda);
        assert!(matches!(
            emulated.backend_with(&Config::from_lookup(|_| None)),
            Backend::Emulated
        ));

        let real = PassThrough::new(Api::Cuda);
        assert!(matches!(
            real.backend_with(&config_with_cuda_path("libc.so.6")),
            Backend::Real(_)
        ));

        let broken = PassThrough::new(Api::Cuda);
        let config = config_with_cuda_path("/nonexistent/libcuda.so.1");
        assert!(matches!(broken.backend_with(&config), Backend::Unavailable));
        assert!(
            matches!(broken.backend_with(&config), Backend::Unavailable),
            "loaded once"
        );

        let nvml = PassThrough::new(Api::Nvml);
        assert!(
            matches!(nvml.backend_with(&config), Backend::Emulated),
            "NVML reads its own variable"
        );
    }
}
