//! Implicit loads from the kernel's view of ld.so's file work: every library mapped, the paths
//! tried before it, and why it was loaded (the dlopen in flight, the DT_NEEDED that named it).
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

fn cc(dir: &Path, args: &[&str]) {
    let ok = Command::new("cc")
        .current_dir(dir)
        .args(args)
        .status()
        .expect("cc")
        .success();
    assert!(ok, "cc {args:?}");
}

/// liba.so → NEEDED libchainb.so (found through liba's RUNPATH, after a dir that lacks it) →
/// NEEDED libchainc.so (found through LD_LIBRARY_PATH, after a dir that lacks it).
fn chain() -> tempfile::TempDir {
    let scratch = temp_dir("chain");
    let dir = scratch.path();
    for sub in ["a", "b", "c", "empty"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("c.c"), "int c(void) { return 3; }\n").unwrap();
    std::fs::write(
        dir.join("b.c"),
        "int c(void); int b(void) { return c(); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.c"),
        "int b(void); int a(void) { return b(); }\n",
    )
    .unwrap();
    cc(
        dir,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libchainc.so",
            "c.c",
            "-o",
            "c/libchainc.so",
        ],
    );
    cc(
        dir,
        &[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libchainb.so",
            "b.c",
            "-o",
            "b/libchainb.so",
            "-Lc",
            "-lchainc",
        ],
    );
    let runpath = format!(
        "-Wl,-rpath,{}:{}",
        dir.join("empty").display(),
        dir.join("b").display()
    );
    cc(
        dir,
        &[
            "-shared",
            "-fPIC",
            "-Wl,--enable-new-dtags",
            &runpath,
            "a.c",
            "-o",
            "a/liba.so",
            "-Lb",
            "-lchainb",
            "-Wl,--allow-shlib-undefined",
        ],
    );
    scratch
}

/// `vgpu-trace run --format jsonl -- CMD... --hold`, CMD ending in dl-child: the child waits
/// after its dlopen until its stdin (our pipe) closes, which we do once the trace shows the
/// dlopen: by then the tracer has compared it with /proc/PID/maps, the process alive, with no
/// pause to guess. The command's own output goes to /dev/null, so stdout is the trace alone.
/// Returns the trace and the tracer's stderr.
fn trace_held_dlopen(cmd: &[String]) -> (Trace, String) {
    let lib = cmd.last().unwrap().clone();
    let mut tracer = tracer()
        .args(["run", "--format", "jsonl", "--", "sh", "-c"])
        .args([r#"exec "$@" --hold > /dev/null"#, "sh"])
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let hold = tracer.stdin.take();
    let stdout = tracer.stdout.take().unwrap();
    let (seen, dlopen_seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if line["type"] == "call" && line["name"] == lib.as_str() {
                let _ = seen.send(());
            }
            lines.push(line);
        }
        lines
    });
    let dlopen_seen = dlopen_seen.recv_timeout(Duration::from_secs(30));
    drop(hold);
    let status = wait_timeout(&mut tracer, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut tracer.stderr.take().unwrap(), &mut stderr).unwrap();
    let lines = reader.join().unwrap();
    assert!(dlopen_seen.is_ok(), "no dlopen in the trace; {stderr}");
    assert!(status.success(), "{stderr}");
    (Trace { lines }, stderr)
}

fn loads_of<'a>(trace: &'a Trace, pid: &Value) -> Vec<&'a Value> {
    trace.of_type("load").filter(|l| &l["pid"] == pid).collect()
}

fn by_name<'a>(loads: &[&'a Value], name: &str) -> &'a Value {
    loads
        .iter()
        .copied()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no load of {name}: {loads:#?}"))
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_three_deep_needed_chain_is_seen_with_its_probes() {
    let _serial = serial();
    let lab = chain();
    let d = |s: &str| lab.path().join(s).to_string_lossy().into_owned();
    let liba = d("a/liba.so");
    let (trace, stderr) = trace_held_dlopen(&[
        "env".into(),
        format!("LD_LIBRARY_PATH={}:{}", d("empty"), d("c")),
        fixture("dl-child").to_string_lossy().into_owned(),
        liba.clone(),
    ]);
    assert!(stderr.contains("armed in"), "{stderr}");
    trace.assert_nothing_lost();
    let child = trace
        .of_type("exec")
        .find(|e| e["comm"] == "dl-child")
        .expect("dl-child exec");
    let loads = loads_of(&trace, &child["pid"]);

    let a = by_name(&loads, "liba.so");
    assert_eq!(a["path"], liba.as_str());
    assert_eq!(a["during"], liba.as_str());
    assert!(a.get("needed_by").is_none(), "{a}");

    let b = by_name(&loads, "libchainb.so");
    assert_eq!(b["path"], format!("{}/libchainb.so", d("b")));
    assert_eq!(b["needed_by"], liba.as_str());
    assert_eq!(b["during"], liba.as_str());
    let c = by_name(&loads, "libchainc.so");
    assert_eq!(c["path"], format!("{}/libchainc.so", d("c")));
    assert_eq!(c["needed_by"], format!("{}/libchainb.so", d("b")));
    for (load, missing_dir) in [(b, "empty"), (c, "empty")] {
        let probes = load["probes"]
            .as_array()
            .unwrap_or_else(|| panic!("no probes: {load}"));
        assert!(!probes.is_empty());
        assert!(probes.iter().all(|p| p["error"] == "ENOENT"), "{probes:?}");
        assert!(
            probes
                .iter()
                .any(|p| p["path"].as_str().unwrap().starts_with(&d(missing_dir))),
            "{probes:?}"
        );
        // The model agrees with what ld.so did.
        assert!(load.get("predicted").is_none(), "{load}");
    }
    // The dlopen knows what it gained, and /proc/PID/maps agrees.
    let call = trace
        .of_type("call")
        .find(|c| c["name"] == liba.as_str())
        .expect("the dlopen");
    let gained: Vec<&str> = call["gained"]
        .as_array()
        .unwrap_or_else(|| panic!("{call}"))
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(
        gained,
        [
            liba.as_str(),
            b["path"].as_str().unwrap(),
            c["path"].as_str().unwrap()
        ]
    );
    assert_eq!(call["maps_missing"], serde_json::json!([]), "{call}");
    // Loads come in ld.so's order: the object, then its dependencies.
    let order: Vec<&str> = loads.iter().map(|l| l["name"].as_str().unwrap()).collect();
    let pos = |n: &str| order.iter().position(|o| *o == n).unwrap();
    assert!(
        pos("liba.so") < pos("libchainb.so") && pos("libchainb.so") < pos("libchainc.so"),
        "{order:?}"
    );
}

/// The dlopen of the chain's liba.so in `cmd` (its process changed its mappings right after),
/// traced: the maps check comes a reorder window after the call, too late to say anything.
fn maps_check_of_an_unmapped_dlopen(tag: &str, cmd: &str, lab: &tempfile::TempDir) {
    let liba = lab.path().join("a/liba.so").display().to_string();
    let mut cmd = vec![
        "env".into(),
        format!("LD_LIBRARY_PATH={}", lab.path().join("c").display()),
        "sh".into(),
        "-c".into(),
        cmd.into(),
        "sh".into(),
        liba.clone(),
    ];
    let (trace, out) = run_traced(tag, &[], &mut cmd);
    assert!(out.status.success(), "{out:?}");
    let call = trace
        .of_type("call")
        .find(|c| c["name"] == liba.as_str())
        .expect("the dlopen");
    assert_eq!(call["gained"].as_array().map(Vec::len), Some(3), "{call}");
    assert!(call.get("maps_missing").is_none(), "{call}");
}

/// A process that exits at once stays a zombie (empty maps) while its parent does not reap it.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_dlopen_whose_process_exited_before_the_maps_check_is_not_called_missing() {
    let _serial = serial();
    let lab = chain();
    let child = fixture("dl-child").display().to_string();
    maps_check_of_an_unmapped_dlopen("zombie", &format!("{child} \"$1\" & exec sleep 1"), &lab);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_library_unloaded_before_the_maps_check_is_not_called_missing() {
    let _serial = serial();
    let lab = chain();
    let script = "import ctypes, _ctypes, sys, time\n\
                  _ctypes.dlclose(ctypes.CDLL(sys.argv[1])._handle)\n\
                  time.sleep(0.5)\n";
    maps_check_of_an_unmapped_dlopen(
        "dlclose",
        &format!("exec python3 -c '{script}' \"$1\""),
        &lab,
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_failed_dlopen_lists_what_was_tried() {
    let _serial = serial();
    let lab = chain();
    let mut cmd = vec![
        "env".into(),
        format!("LD_LIBRARY_PATH={}", lab.path().join("empty").display()),
        fixture("dl-child").to_string_lossy().into_owned(),
        "libvgpu-nowhere.so.1".into(),
    ];
    let (trace, _) = run_traced("nowhere", &[], &mut cmd);
    let call = trace
        .of_type("call")
        .find(|c| c["name"] == "libvgpu-nowhere.so.1")
        .expect("the dlopen");
    assert_eq!(call["ok"], false);
    let probes = call["probes"]
        .as_array()
        .unwrap_or_else(|| panic!("no probes: {call}"));
    assert!(
        probes.iter().any(|p| p["path"]
            .as_str()
            .unwrap()
            .starts_with(lab.path().to_str().unwrap())),
        "{probes:?}"
    );
    assert!(probes.iter().all(|p| p["error"] == "ENOENT"));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn non_library_opens_stay_in_the_kernel() {
    let _serial = serial();
    // A followed process opens a non-library file 100,000 times; an unrelated one a million.
    let unrelated = Command::new("python3")
        .args([
            "-c",
            "import os\nfor _ in range(1000000): os.close(os.open('/etc/hostname', os.O_RDONLY))",
        ])
        .spawn()
        .unwrap();
    let events = |n: u32| {
        let script = format!(
            "import os\nfor _ in range({n}): os.close(os.open('/etc/hostname', os.O_RDONLY))"
        );
        let mut cmd = vec!["python3".into(), "-c".into(), script];
        let (trace, out) = run_traced(&format!("opens-{n}"), &[], &mut cmd);
        assert!(out.status.success());
        trace.assert_nothing_lost();
        (trace.summary()["events"].as_u64().unwrap(), trace)
    };
    let (baseline, _) = events(0);
    let (busy, trace) = events(100_000);
    let mut unrelated = unrelated;
    let _ = unrelated.wait();
    // The same start-up either way (python's own loads and children), nothing per open.
    assert!(
        busy <= baseline + 20,
        "{busy} events with 100k non-library opens, {baseline} without"
    );
    assert!(
        trace
            .of_type("load")
            .all(|l| l["path"].as_str().unwrap().contains(".so"))
    );
}
