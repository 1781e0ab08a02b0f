//! For the shims' pass-through tests: a stand-in for NVIDIA's library, built from C here, and
//! the shim itself, opened as a C program opens it. Included with `#[path]`.

use std::path::{Path, PathBuf};
use std::process::Command;

use vgpu_trace_fixtures::{dlerror, dlopen, dlsym};

/// Compiles `tests/data/<source>` into a shared library in cargo's scratch directory, under a
/// private name first, so a concurrent test run never opens half a file.
pub fn build_c_library(source: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join(source.replace(".c", ".so"));
    let partial = dir.join(format!("{source}.{}.so", std::process::id()));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-fPIC", "-shared", "-o"])
        .arg(&partial)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(source),
        )
        .status()
        .expect("run cc");
    assert!(status.success(), "building {source}");
    std::fs::rename(&partial, &out).expect("move the library into place");
    out
}

/// The shim cargo built with this test binary (`file`, e.g. `libvgpu_cuda.so`), opened.
pub fn open_shim(file: &str) -> usize {
    let exe = std::env::current_exe().expect("test binary");
    let deps = exe.parent().expect("target/<profile>/deps");
    let path = [Some(deps), deps.parent()]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(file))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{file} next to {}", exe.display()));
    let handle = dlopen(
        path.to_str().expect("UTF-8 path"),
        libc::RTLD_NOW | libc::RTLD_LOCAL,
    );
    assert_ne!(handle, 0, "{:?}", dlerror());
    handle
}

/// The function `name` of the library `handle`, as the function pointer type `F`.
///
/// # Safety
/// `F` must be the C signature the library gives `name`.
pub unsafe fn function<F: Copy>(handle: usize, name: &str) -> F {
    const { assert!(size_of::<F>() == size_of::<usize>()) };
    let address = dlsym(handle, name);
    assert_ne!(address, 0, "{name} is not exported");
    // SAFETY: a non-NULL function address; the caller vouches for the signature.
    unsafe { std::mem::transmute_copy(&address) }
}

/// How many calls reached the stand-in named by the pass-through variable `variable`, if the
/// shim has loaded it.
pub fn real_calls(variable: &str) -> i32 {
    let path = std::env::var(variable).expect("the pass-through library");
    let handle = dlopen(&path, libc::RTLD_NOW | libc::RTLD_NOLOAD);
    if handle == 0 {
        return 0;
    }
    let calls = dlsym(handle, "fake_calls");
    assert_ne!(calls, 0, "{path} counts its calls");
    // SAFETY: `fake_calls` is the stand-in's `int`; the test reads it between calls.
    unsafe { *(calls as *const i32) }
}

/// What the stand-ins return for their arguments: a hash, folded to fit an `int`.
pub fn folded(values: &[u64]) -> i32 {
    let hash = values.iter().fold(0_u64, |hash, &value| {
        hash.wrapping_mul(31).wrapping_add(value)
    });
    i32::try_from(hash % 1_000_003).expect("below 2^31")
}
