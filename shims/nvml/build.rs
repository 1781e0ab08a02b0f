//! Gives the shared library the SONAME of NVML, so that once installed under any file name it
//! satisfies `DT_NEEDED: libnvidia-ml.so.1` and `dlopen("libnvidia-ml.so.1")` alike.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
}
