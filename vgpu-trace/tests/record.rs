//! `record` then `replay`: the replayed timeline is byte for byte the live one, from the file
//! alone; a record cut short is incomplete, a bad one an error naming the line.
use std::process::Command;

mod common;
use common::*;

fn replay(file: &std::path::Path) -> std::process::Output {
    tracer()
        .args(["--color", "never", "replay"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn replay_renders_the_live_timeline_byte_for_byte() {
    let _serial = serial();
    let file = temp_file("record");
    // The traced command's own output goes elsewhere, so stdout is the timeline alone.
    let script = format!("{} scenario > /dev/null", fixture("dl-fixture").display());
    let chrome = temp_file("record-perfetto");
    let live = tracer()
        .args(["--color", "never", "record", "--perfetto"])
        .arg(&chrome)
        .arg("-o")
        .arg(&file)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let replayed = replay(&file);
    assert!(replayed.status.success());
    assert!(!live.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&replayed.stdout),
        String::from_utf8_lossy(&live.stdout)
    );

    // The Chrome trace opens as a JSON array with a span per dl* call.
    let spans: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&chrome).unwrap()).unwrap();
    assert!(
        spans
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "dlopen(libm.so.6)"),
        "{spans:?}"
    );
    let _ = std::fs::remove_file(&chrome);

    // Cut short (as by a killed tracer): replayed, reported incomplete.
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = temp_file("record-cut");
    std::fs::write(&cut, text.lines().take(5).collect::<Vec<_>>().join("\n")).unwrap();
    let out = replay(&cut);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is incomplete: 4 events"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&cut);
}

#[test]
fn bad_records_are_clear_errors() {
    for (tag, bytes, says) in [
        ("garbage", &b"not a record\n"[..], "line 1: not JSON"),
        ("empty", &b""[..], "the record is empty"),
        ("future", &br#"{"type":"header","format":"vgpu-trace","format_version":7,"tool_version":"9","kernel":"","host":"","backend":"","mode":"run","target":[],"probed":[]}"#[..], "newer vgpu-trace (format 7"),
        ("binary", &b"\xff\xfe\x00\x01"[..], "line 1"),
    ] {
        let file = temp_file(&format!("bad-{tag}"));
        std::fs::write(&file, bytes).unwrap();
        let out = replay(&file);
        assert_eq!(out.status.code(), Some(2), "{tag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{tag}: {stderr}");
        let _ = std::fs::remove_file(&file);
    }
    let out = tracer()
        .args(["replay", "/nonexistent/record.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Replay needs no privileges.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["replay", "/nonexistent"])
        .output();
    if let Ok(out) = out {
        assert_eq!(out.status.code(), Some(2));
    }
}

/// `record` of a lab preset (era B), its scenario kept until the record is written.
fn record_preset(preset: &str, era: &str) -> std::path::PathBuf {
    let file = temp_file(&format!("lab-{preset}-{era}"));
    let dir = std::env::temp_dir().join(format!(
        "vgpu-trace-lab-{preset}-{era}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let out = tracer()
        .arg("record")
        .arg("-o")
        .arg(&file)
        .arg("--")
        .arg(fixture("vgpu-lab"))
        .args(["run", preset, "--era", era, "--keep", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    file
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn diff_names_what_broke() {
    let _serial = serial();
    let healthy = record_preset("healthy", "b");
    let broken = record_preset("shim-missing-symbols", "b");
    let same = tracer()
        .arg("diff")
        .arg(&healthy)
        .arg(&healthy)
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
    assert!(same.stdout.is_empty());
    let out = tracer()
        .arg("diff")
        .arg(&healthy)
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ollama: ollama runner --ollama-engine --port N\n"),
        "{text}"
    );
    assert!(
        text.contains("~  dlopen libggml-cuda.so: ok → failed (undefined symbol)"),
        "{text}"
    );
    assert!(
        text.contains("-  load libnvidia-ml.so.1: libnvidia-ml.so.1 [shim]"),
        "{text}"
    );
    let _ = std::fs::remove_file(&healthy);
    let _ = std::fs::remove_file(&broken);
}

fn check(record: &std::path::Path, expectations: &str) -> std::process::Output {
    let toml = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("lab/expect")
        .join(expectations);
    tracer()
        .arg("check")
        .arg(record)
        .arg("--expect")
        .arg(toml)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn the_lab_expectations_hold_and_fail_as_they_should() {
    let _serial = serial();
    let healthy = record_preset("healthy", "b");
    let broken = record_preset("shim-missing-symbols", "b");
    for (record, toml) in [
        (&healthy, "healthy-b.toml"),
        (&broken, "shim-missing-symbols-b.toml"),
    ] {
        let out = check(record, toml);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{toml}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = check(&healthy, "shim-missing-symbols-b.toml");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  expected: dlopen libggml-cuda.so step=undefined symbol ok=false"),
        "{text}"
    );
    assert!(
        text.contains("nearest: dlopen(") && text.contains("ok=true"),
        "{text}"
    );
    assert!(
        text.contains("FAIL  forbidden: api cuInit")
            && text.contains("seen: cuInit() = CUDA_SUCCESS"),
        "{text}"
    );
    let out = check(&broken, "healthy-b.toml");
    assert_eq!(out.status.code(), Some(1));
    // A bad expectations file is exit 2.
    let bad = temp_file("bad-expect");
    std::fs::write(&bad, "[[expect]]\nclass = \"shim\"\n").unwrap();
    let out = tracer()
        .arg("check")
        .arg(&healthy)
        .arg("--expect")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    for f in [healthy, broken, bad] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn the_rust_api_records_and_asserts() {
    let _serial = serial();
    let child = fixture("dl-child");
    let trace =
        vgpu_trace::testing::Trace::record(&[child.to_str().unwrap(), "libm.so.6"]).unwrap();
    assert!(trace.complete);
    trace.assert("[[expect]]\ndlopen = \"libm.so.6\"\nok = true\n");
    assert!(trace.calls().any(|c| {
        c.path
            .as_ref()
            .is_some_and(|p| p.value.ends_with("/libm.so.6"))
    }));
    let report = trace
        .check("[[forbid]]\ndlopen = \"libm.so.6\"\n")
        .unwrap_err();
    assert!(
        report.contains("FAIL  forbidden: dlopen libm.so.6"),
        "{report}"
    );
}

/// `record ARGS -- sh -c "SCRIPT; exec sleep SECONDS"`, which must end well before the sleep
/// does, with a complete record. Returns the tracer's stderr and the record.
fn record_cut_short(
    tag: &str,
    args: &[&str],
    script: &str,
    seconds: u32,
) -> (String, vgpu_trace::testing::Trace) {
    let _serial = serial();
    let file = temp_file(tag);
    // The command outlives the trace: its output must not hold our pipes open.
    let script = format!("{script}; exec sleep {seconds} > /dev/null 2>&1");
    let started = std::time::Instant::now();
    let out = tracer()
        .arg("record")
        .args(args)
        .arg("-o")
        .arg(&file)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    // The sleep is this test's own (each test sleeps for its own number of seconds).
    let _ = Command::new("pkill")
        .args(["-f", &format!("^sleep {seconds}$")])
        .status();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");
    let trace = vgpu_trace::testing::Trace::from_record(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(trace.complete, "the record ends with its summary");
    (stderr, trace)
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn until_ends_a_record_at_the_first_matching_event() {
    let scenario = format!("{} scenario > /dev/null", fixture("dl-fixture").display());
    let (stderr, trace) = record_cut_short(
        "until",
        &["--until", "dlopen=libm.so.6,ok=true"],
        &scenario,
        31,
    );
    assert!(
        stderr.contains("seen dlopen libm.so.6 ok=true; stopping"),
        "{stderr}"
    );
    trace.assert("[[expect]]\ndlopen = \"libm.so.6\"\nok = true\n");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn duration_ends_a_record_with_its_summary() {
    let (stderr, _) = record_cut_short("duration", &["--duration", "1s"], "true", 30);
    assert!(stderr.contains("recorded for 1s; stopping"), "{stderr}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn every_preset_reaches_its_verdict_in_every_era_and_holds_its_rules() {
    use vgpu_lab::{
        ollama::Era,
        preset::{PRESETS, Requires},
    };
    let _serial = serial();
    let mut wrong = Vec::new();
    for preset in PRESETS
        .iter()
        .filter(|p| p.requires != Requires::NvidiaDriver)
    {
        for (era, name) in [(Era::A, "a"), (Era::B, "b"), (Era::C, "c")] {
            let expected = preset.verdict(era);
            if expected.is_empty() {
                continue;
            }
            let record = record_preset(preset.name, name);
            let verdict = vgpu_trace::testing::Trace::from_record(&record)
                .unwrap()
                .verdict();
            if verdict.outcome.name() != expected {
                wrong.push(format!(
                    "{} era {name}: expected {expected}, got {verdict}",
                    preset.name
                ));
            }
            if era == Era::B && expected != "shim-used" {
                // The healthy rules fail on a broken run, first of all on its verdict.
                let out = check(&record, "healthy-b.toml");
                let report = String::from_utf8_lossy(&out.stdout);
                let reason = format!(
                    "FAIL  expected: verdict shim-used\n      nearest: the verdict is {expected}: "
                );
                if out.status.code() != Some(1) || !report.contains(&reason) {
                    wrong.push(format!(
                        "{}: healthy-b.toml reported:\n{report}",
                        preset.name
                    ));
                }
            }
            if era == Era::B {
                let out = check(&record, &format!("{}-b.toml", preset.name));
                if out.status.code() != Some(0) {
                    wrong.push(format!(
                        "{} era b: lab/expect/{}-b.toml does not hold:\n{}{}",
                        preset.name,
                        preset.name,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            let _ = std::fs::remove_file(&record);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
