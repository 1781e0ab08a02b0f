//! A shim a process loaded without using it, on real processes: loaded and never called, or
//! mapped by a dlopen that then failed. Neither is a process that ended before cuInit returned.
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
