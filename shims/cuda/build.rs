//! Gives the shared library the SONAME of the CUDA driver, so that once installed under any file
//! name it satisfies `DT_NEEDED: libcuda.so.1` and `dlopen("libcuda.so.1")` alike, and
//! generates a forwarding export for every driver function `src/lib.rs` does not define.

#[path = "../common/build-support/exports.rs"]
mod exports;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../common/build-support/exports.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    exports::write_forwarded("exports.txt", "src/lib.rs");
}
