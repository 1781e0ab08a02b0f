//! A shim a process loaded without using it, on real processes: loaded and never called, or
//! mapped by a dlopen that then failed. Neither is a process that ended before cuInit returned.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::*;

fn verdict(trace: &Trace) -> (String, String) {
    let v = &trace.summary()["verdict"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    (text(&v["outcome"]), text(&v["text"]))
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_shim_loaded_and_never_called_is_unused() {
    let _serial = serial();
    let shim = fixture("libvgpu_cuda.so").display().to_string();
    let script = "import ctypes, sys\nctypes.CDLL(sys.argv[1])\n";
    let mut cmd = vec!["python3".into(), "-c".into(), script.into(), shim.clone()];
    let (trace, out) = run_traced("shim-unused", &[], &mut cmd);
    assert!(out.status.success(), "{out:?}");
    let (outcome, text) = verdict(&trace);
    assert_eq!(outcome, "shim-unused", "{text}");
    assert!(
        text.starts_with("pid ")
            && text.ends_with(&format!(
                " (python3) loaded the shim {shim} but never called it; exited 0"
            )),
        "{text}"
    );
}

/// In a Debian 11 root (glibc 2.31), a program of its own dlopens a shim built on the host that
/// needs GLIBC_2.33: ld.so maps the shim, then the dlopen fails on the version, with dlerror's
/// text (`version `GLIBC_2.33' not found`) quoted as the program got it.
#[test]
#[ignore = "needs root, a BPF-capable kernel and a Debian 11 root filesystem (cargo xtask test runs it)"]
fn a_shim_needing_a_newer_c_library_is_load_failed_with_why() {
    let _serial = serial();
    let bullseye = PathBuf::from(std::env::var_os("VGPU_TEST_ROOTFS_BULLSEYE").expect(
        "VGPU_TEST_ROOTFS_BULLSEYE: a Debian 11 root filesystem with gcc; run through \
         `cargo xtask test`, which makes it",
    ));
    let dir = tempfile::Builder::new()
        .prefix("vgpu-trace-load-failed-")
        .tempdir_in(bullseye.join("tmp"))
        .unwrap();
    let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
    // The program built there, against glibc 2.31; the shim on the host, against its glibc.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dlopen-linger.c"),
        dir.path().join("dlopen-linger.c"),
    )
    .unwrap();
    let program = inside.join("dlopen-linger").display().to_string();
    let built = Command::new("chroot")
        .arg(&bullseye)
        .args(["gcc", "-O2", "-o", &program])
        .arg(inside.join("dlopen-linger.c"))
        // glibc before 2.34 keeps dlopen in libdl.
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    build_c_library(
        "cuda-glibc-2.33.c",
        &dir.path().join("libcuda.so.1"),
        "libcuda.so.1",
    );
    let shim_inside = inside.join("libcuda.so.1").display().to_string();
    let mut cmd = vec![
        "chroot".into(),
        bullseye.display().to_string(),
        program,
        shim_inside.clone(),
    ];
    let (trace, out) = run_traced("load-failed", &[], &mut cmd);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error = facts(&out.stdout)["error"].clone();
    let (outcome, text) = verdict(&trace);
    assert_eq!(outcome, "load-failed", "{text}");
    assert!(
        text.contains(&format!(
            " (dlopen-linger): dlopen of the shim {shim_inside} failed: {error}; the C library \
             there is older than the shim needs (GLIBC_2.33)"
        )),
        "{text}"
    );
}
