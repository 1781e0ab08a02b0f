//! Exit statuses, the same for every subcommand: 0 fine, 1 a check failed or a difference was
//! found, 2 bad input or usage, 3 cannot trace (README, "Exit status").
use std::process::Command;

mod common;
use common::*;

const RECORD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dl-fixture.vgt");

fn status(args: &[&str]) -> (Option<i32>, String) {
    let out = tracer().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[track_caller]
fn assert_status(args: &[&str], code: i32, says: &str) {
    let (got, stderr) = status(args);
    assert_eq!(got, Some(code), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}

/// A file in `dir` holding `text`, as a string argument.
fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn bad_flags_are_usage_errors() {
    assert_status(&["--no-such-flag"], 2, "unexpected argument");
    assert_status(&["record", "--", "true"], 2, "--output");
    assert_status(
        &["run", "--ring-size", "5000", "--", "true"],
        2,
        "power of two",
    );
    assert_status(
        &[
            "record",
            "-o",
            "/dev/null",
            "--until",
            "nonsense",
            "--",
            "true",
        ],
        2,
        "",
    );
}

#[test]
fn a_missing_or_malformed_record_is_bad_input_everywhere() {
    let dir = temp_dir("exit-records");
    let garbage = write(&dir, "garbage.vgt", "not a record\n");
    let rules = write(&dir, "rules.toml", "[[expect]]\ndlopen = \"libm.so.6\"\n");
    for bad in [garbage.as_str(), "/nonexistent/record.vgt"] {
        assert_status(&["replay", bad], 2, bad);
        assert_status(&["check", bad, "--expect", &rules], 2, bad);
        assert_status(&["diff", RECORD, bad], 2, bad);
        assert_status(&["diff", bad, RECORD], 2, bad);
    }
}

#[test]
fn bad_or_missing_rules_are_bad_input_and_failing_rules_are_1() {
    let dir = temp_dir("exit-rules");
    let unknown_field = write(&dir, "bad.toml", "[[expect]]\nclass = \"shim\"\n");
    assert_status(
        &["check", RECORD, "--expect", &unknown_field],
        2,
        "bad.toml",
    );
    assert_status(
        &["check", RECORD, "--expect", "/nonexistent.toml"],
        2,
        "cannot read",
    );
    let holds = write(&dir, "holds.toml", "[[expect]]\ndlopen = \"libm.so.6\"\n");
    assert_status(&["check", RECORD, "--expect", &holds], 0, "");
    let fails = write(&dir, "fails.toml", "[[forbid]]\ndlopen = \"libm.so.6\"\n");
    let out = tracer()
        .args(["check", RECORD, "--expect", &fails])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  forbidden: dlopen libm.so.6"));
}

#[test]
fn a_difference_is_1_and_none_is_0() {
    let dir = temp_dir("exit-diff");
    let same = std::fs::read_to_string(RECORD).unwrap();
    let changed = same.replace(r#""name":"cos""#, r#""name":"sin""#);
    assert_ne!(same, changed);
    let changed = write(&dir, "changed.vgt", &changed);
    assert_status(&["diff", RECORD, RECORD], 0, "");
    let out = tracer().args(["diff", RECORD, &changed]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dlsym sin"));
}

#[test]
fn doctor_and_resolve_on_bad_input_are_2() {
    let dir = temp_dir("exit-doctor");
    let not_toml = write(&dir, "shims.toml", "cuda = [unclosed\n");
    let config_dir = dir.path().to_string_lossy().into_owned();
    for config in [&not_toml, &config_dir] {
        assert_status(&["doctor", "--shims-config", config], 2, config);
    }
    let gone = "4000000000";
    for cmd in ["doctor", "resolve"] {
        let mut args = vec![cmd];
        if cmd == "resolve" {
            args.push("libcuda.so.1");
        }
        let with = |extra: &[&'static str]| [args.as_slice(), extra].concat();
        assert_status(&with(&["--pid", gone]), 2, "no process 4000000000");
        assert_status(&with(&["--root", "/nonexistent"]), 2, "not a directory");
        assert_status(&with(&["--env", "NO_EQUALS"]), 2, "expected K=V");
        assert_status(&with(&["--shim", "gpu=/x"]), 2, "gpu");
    }
}

#[test]
fn an_output_that_cannot_be_written_is_2() {
    assert_status(
        &["replay", RECORD, "--perfetto", "/nonexistent/trace.json"],
        2,
        "cannot write /nonexistent/trace.json",
    );
}

#[test]
fn tracing_without_privileges_is_3_and_names_them() {
    for args in [
        // `run`, `attach` and `record` fall back to ptrace unless told not to
        // (tests/ptrace.rs).
        &["run", "--backend", "ebpf", "--", "true"][..],
        &["attach", "--backend", "ebpf", "1"],
        &["attach", "--all"],
        &[
            "record",
            "--backend",
            "ebpf",
            "-o",
            "/dev/null",
            "--",
            "true",
        ],
    ] {
        let out = unprivileged(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("tracing needs root") && stderr.contains("CAP_BPF"),
            "{args:?}: {stderr}"
        );
    }
    // What needs no privileges still works without them.
    assert_eq!(unprivileged(&["replay", RECORD]).status.code(), Some(0));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn tracing_in_a_user_namespace_is_3_and_says_why() {
    let out = Command::new("unshare")
        .arg("-Ur")
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["run", "--backend", "ebpf", "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("EPERM in a user namespace"), "{stderr}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn attach_to_an_unknown_process_is_2() {
    let _serial = serial();
    assert_status(
        &["attach", "4000000000"],
        2,
        "no process with pid 4000000000",
    );
    assert_status(
        &["attach", "vgpu-no-such-process"],
        2,
        "no running process named",
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn run_of_a_missing_command_is_2() {
    let _serial = serial();
    assert_status(
        &["run", "--", "/nonexistent/command"],
        2,
        "cannot run \"/nonexistent/command\"",
    );
}

#[test]
fn completions_and_man_pages_come_from_the_cli_itself() {
    for (shell, says) in [
        ("bash", "_vgpu__trace()"),
        ("zsh", "#compdef vgpu-trace"),
        ("fish", "complete -c vgpu-trace"),
    ] {
        let out = tracer().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains(says) && script.contains("attach"),
            "{shell}: {script}"
        );
    }
    assert_status(&["completions", "tcsh"], 2, "invalid value 'tcsh'");
    let dir = tempfile::tempdir().unwrap();
    let out = tracer().arg("manpages").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("vgpu-trace-run.1")).unwrap();
    assert!(page.contains(".TH vgpu-trace-run"), "{page}");
    // The engine's own entry point is no command for users, nor a page.
    assert!(!dir.path().join("vgpu-trace-ptrace-engine.1").exists());
    assert_status(
        &["manpages", "/proc/version/x"],
        2,
        "cannot create /proc/version/x",
    );
}
