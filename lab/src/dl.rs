//! A loaded library: dlopen with dlerror's text on failure, typed dlsym.
use vgpu_trace_fixtures as fx;

pub use libc::{RTLD_GLOBAL, RTLD_LAZY, RTLD_LOCAL, RTLD_NOW};

pub struct Library {
    handle: usize,
    pub path: String,
}

impl Library {
    pub fn open(path: &str, flags: i32) -> Result<Self, String> {
        match fx::dlopen(path, flags) {
            0 => Err(fx::dlerror().unwrap_or_else(|| format!("{path}: dlopen failed"))),
            handle => Ok(Self {
                handle,
                path: path.to_string(),
            }),
        }
    }

    /// `dlsym` cast to the function pointer type `F`.
    ///
    /// # Safety
    /// `F` must be an `extern "C" fn` type matching the symbol's real signature.
    pub unsafe fn sym<F: Copy>(&self, name: &str) -> Option<F> {
        const { assert!(size_of::<F>() == size_of::<usize>()) };
        match fx::dlsym(self.handle, name) {
            0 => None,
            // SAFETY: the caller promises F is the symbol's function pointer type.
            addr => Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) }),
        }
    }

    pub fn close(self) {
        fx::dlclose(self.handle);
    }
}

/// Reads a NUL-terminated C string out of a fixed buffer.
pub fn c_buf(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}
