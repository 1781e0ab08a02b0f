//! Gives the shared library the SONAME of NVML, so that once installed under any file name it
//! satisfies `DT_NEEDED: libnvidia-ml.so.1` and `dlopen("libnvidia-ml.so.1")` alike, and
//! generates a forwarding export for every NVML function `src/lib.rs` does not define.

#[path = "../common/build-support/exports.rs"]
mod exports;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../common/build-support/exports.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    exports::write_forwarded("exports.txt", "src/lib.rs");
}
