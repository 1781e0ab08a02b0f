//! Gives the shared library the SONAME of the CUDA driver, so that once installed under any file
//! name it satisfies `DT_NEEDED: libcuda.so.1` and `dlopen("libcuda.so.1")` alike.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
}
