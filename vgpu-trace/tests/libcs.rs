//! Other C libraries than the host's glibc: a program linked against musl (Debian's
//! musl-tools), whose loader is its C library, gives the same `dl*` events and verdict as the
//! same program on glibc. (glibc 2.31, which keeps dlopen in libdl.so.2, runs in a Debian 11
//! container: containers.rs.)
mod common;
use common::*;

/// dl-libc built by `cc`, traced with its own shim declared (armed at start) or not (armed
/// while its process is held at the shim's mapping, which only the loader's `open` of it
/// shows): its shape, and the libraries it loaded (file names).
fn traced(tag: &str, cc: &[&str], declared: bool) -> (LibcShape, Vec<String>) {
    let dir = temp_dir(tag);
    let (program, shim) = build_dl_libc(dir.path(), cc, None);
    let shim_arg = format!("cuda={}", shim.display());
    let extra: &[&str] = if declared {
        &["--shim", &shim_arg]
    } else {
        &[]
    };
    let mut cmd = vec![program.display().to_string(), shim.display().to_string()];
    let (trace, out) = run_traced(tag, extra, &mut cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "init=0 count=0 devices=1 missing=not-found absent=not-found"
    );
    trace.assert_nothing_lost();
    let loads = trace
        .of_type("load")
        .filter_map(|l| Some(l["path"].as_str()?.rsplit('/').next()?.to_string()))
        .filter(|name| name.starts_with("libcuda"))
        .collect();
    (libc_shape(&trace), loads)
}

#[test]
#[ignore = "needs root, a BPF-capable kernel and musl-tools (cargo xtask test installs it)"]
fn a_musl_program_gives_the_events_and_verdict_of_glibc() {
    let _serial = serial();
    let (glibc, glibc_loads) = traced("libc-glibc", &["cc"], true);
    assert_eq!(glibc.2, "shim-used", "{glibc:?}");
    assert_eq!(glibc_loads, ["libcuda.so.1"]);
    assert_eq!(glibc.0.len(), 6, "{glibc:?}");
    assert_eq!(
        glibc.1,
        [
            ("cuInit".to_string(), "CUDA_SUCCESS".to_string()),
            ("cuDeviceGetCount".to_string(), "CUDA_SUCCESS".to_string())
        ]
    );
    for declared in [true, false] {
        let tag = format!("libc-musl-{declared}");
        let (musl, loads) = traced(&tag, &["musl-gcc"], declared);
        assert_eq!(musl, glibc, "shim declared: {declared}");
        // musl's loader opens libraries with open(2), not openat.
        assert_eq!(loads, glibc_loads, "shim declared: {declared}");
    }
}
