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

#[test]
fn replay_writes_its_perfetto_trace_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let record = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dl-fixture.vgt");
    let dir = temp_dir("perfetto");
    let fresh = dir.path().join("fresh.json");
    // An existing world-readable file is narrowed before the trace goes in.
    let old = dir.path().join("old.json");
    std::fs::write(&old, "stale").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    for path in [&fresh, &old] {
        let out = tracer()
            .args(["replay", record, "--perfetto"])
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let spans: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(!spans.is_empty());
    }
}

/// `record` of a lab preset (era B), its scenario kept until the record is written.
fn record_preset(preset: &str, era: &str) -> tempfile::TempPath {
    let file = temp_file(&format!("lab-{preset}-{era}"));
    let dir = temp_dir(&format!("lab-{preset}-{era}"));
    let out = tracer()
        .arg("record")
        .arg("-o")
        .arg(&file)
        .arg("--")
        .arg(fixture("vgpu-lab"))
        .args(["run", preset, "--era", era, "--keep", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
}

fn lab_expect(rules: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lab/expect")
        .join(rules)
}

fn check(record: &std::path::Path, expectations: &str) -> std::process::Output {
    let toml = lab_expect(expectations);
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
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn the_rust_api_records_and_asserts() {
    let _serial = serial();
    let child = fixture("dl-child");
    let trace =
        vgpu_trace::testing::Trace::record(&[child.to_str().unwrap(), "libm.so.6"]).unwrap();
    assert!(trace.complete);
    // What the session had to say is handed back, not printed into the test's output.
    assert!(
        trace.notices.iter().any(|n| n.starts_with("armed in"))
            && trace.notices.iter().any(|n| n.ends_with(" lost")),
        "{:?}",
        trace.notices
    );
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

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn the_rust_api_records_in_a_private_dir_a_planted_link_cannot_redirect() {
    let _serial = serial();
    // Where `Trace::record` used to write, predictably: a link planted there by anyone.
    let victim = temp_file("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let planted =
        std::env::temp_dir().join(format!("vgpu-trace-testing-{}.vgt", std::process::id()));
    let _ = std::fs::remove_file(&planted);
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let child = fixture("dl-child");
    let trace = vgpu_trace::testing::Trace::record(&[child.to_str().unwrap(), "libm.so.6"]);
    let _ = std::fs::remove_file(&planted);
    assert!(trace.unwrap().complete);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

/// `record ARGS -- sh -c "SCRIPT; exec cat"`: the command outlives the trace, reading its
/// stdin (our pipe) until we close it, so it ends when the test is done with it and no process
/// needs finding or killing. Returns the tracer's stderr and the record.
fn record_cut_short(
    tag: &str,
    args: &[&str],
    script: &str,
) -> (String, vgpu_trace::testing::Trace) {
    use std::process::Stdio;
    let _serial = serial();
    let file = temp_file(tag);
    let stderr = temp_file(&format!("{tag}-stderr"));
    // The command's output must not hold our pipes open, hence files and /dev/null.
    let script = format!("{script}; exec cat > /dev/null 2>&1");
    let mut tracer = tracer()
        .arg("record")
        .args(args)
        .arg("-o")
        .arg(&file)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // Dropped at the end of this function, or as a failed wait unwinds: the command's cue.
    let _command_stdin = tracer.stdin.take();
    let status = wait_timeout(&mut tracer, std::time::Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let trace = vgpu_trace::testing::Trace::from_record(&file).unwrap();
    assert!(trace.complete, "the record ends with its summary");
    (stderr, trace)
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn until_ends_a_record_at_the_first_matching_event() {
    let scenario = format!("{} scenario > /dev/null", fixture("dl-fixture").display());
    let (stderr, trace) =
        record_cut_short("until", &["--until", "dlopen=libm.so.6,ok=true"], &scenario);
    assert!(
        stderr.contains("seen dlopen libm.so.6 ok=true; stopping"),
        "{stderr}"
    );
    trace.assert("[[expect]]\ndlopen = \"libm.so.6\"\nok = true\n");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn duration_ends_a_record_with_its_summary() {
    let (stderr, _) = record_cut_short("duration", &["--duration", "1s"], "true");
    assert!(stderr.contains("recorded for 1s; stopping"), "{stderr}");
}

/// Era D verdicts must say why, not only what: (preset, era, words the verdict contains).
const ERA_D_REASONS: &[(&str, &str, &str)] = &[
    ("driver-too-old-for-v13", "d", "cuda_v13 failed"),
    (
        "driver-too-old-for-v13",
        "d",
        "libcudart.so.13 needs a CUDA 13.0 driver, and cuDriverGetVersion reports 12.8",
    ),
    // Ollama's line names the device by its description, with `cc=350` and the `archs`.
    (
        "cc-not-compiled",
        "d",
        "compute capability not in compiled architectures (device=vGPU H100 80GB)",
    ),
    ("vulkan-instead", "d", "Ollama fell back to Vulkan"),
    ("vulkan-instead", "d", "undefined symbol"),
    ("bundled-shadows-shim", "d", "cuda_v12 failed"),
];

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
        for era in Era::ALL {
            let name = era.name();
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
            // What the verdict must name, beyond its outcome.
            for (p, e, says) in ERA_D_REASONS {
                if (*p, *e) == (preset.name, name) && !verdict.text.contains(says) {
                    wrong.push(format!(
                        "{} era {name}: the verdict does not say {says:?}: {verdict}",
                        preset.name
                    ));
                }
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
            if era == Era::D && expected != "shim-used" {
                let out = check(&record, "healthy-d.toml");
                if out.status.code() != Some(1) {
                    wrong.push(format!(
                        "{}: healthy-d.toml did not fail:\n{}",
                        preset.name,
                        String::from_utf8_lossy(&out.stdout)
                    ));
                }
            }
            // Every preset has era B rules; era D's own presets have era D rules too.
            let rules = format!("{}-{name}.toml", preset.name);
            if era == Era::B || lab_expect(&rules).exists() {
                let out = check(&record, &rules);
                if out.status.code() != Some(0) {
                    wrong.push(format!(
                        "{} era {name}: lab/expect/{rules} does not hold:\n{}{}",
                        preset.name,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_terminal_closed_early_costs_the_record_nothing() {
    let _serial = serial();
    let file = temp_file("record-closed-stdout");
    let script = format!(
        "exec >/dev/null; {} scenario",
        fixture("dl-fixture").display()
    );
    // The timeline goes to a pipe nobody reads (`record ... | head -0`).
    let mut tracer = tracer()
        .args(["record", "-o"])
        .arg(&file)
        .args(["--", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(tracer.stdout.take());
    let out = tracer.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let trace = Trace::read(&file);
    // Everything the scenario does: its ten calls, both processes' exits, the summary.
    assert_eq!(trace.of_type("call").count(), 10);
    assert_eq!(
        trace.of_type("exit").count(),
        3,
        "sh, dl-fixture's child, dl-fixture"
    );
    assert_eq!(trace.summary()["calls"], 10);
}
