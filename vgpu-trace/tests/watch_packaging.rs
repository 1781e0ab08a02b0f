//! What ships with `vgpu-trace watch`: the alerting rules (docs/alerts.yml) pass promtool's
//! check and their unit tests (docs/alerts.test.yml), on Debian 12's Prometheus as `cargo
//! xtask test` unpacks it (`VGPU_TEST_PROMETHEUS`, the dir holding promtool); the systemd unit
//! (xtask/assets/vgpu-trace-watch.service) passes `systemd-analyze verify` and keeps the
//! access the tracer needs.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::*;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn unit_source() -> PathBuf {
    workspace().join("xtask/assets/vgpu-trace-watch.service")
}

/// promtool from `cargo xtask test`'s unpacked package, or None (and the test recorded as
/// skipped) without one.
fn promtool(test: &str) -> Option<PathBuf> {
    match std::env::var_os("VGPU_TEST_PROMETHEUS") {
        Some(dir) if Path::new(&dir).join("promtool").is_file() => {
            Some(Path::new(&dir).join("promtool"))
        }
        _ => {
            vgpu_trace_fixtures::skip_test(
                test,
                "no promtool: VGPU_TEST_PROMETHEUS unset (cargo xtask test unpacks Debian's \
                 prometheus into target/tools/prometheus)",
            );
            None
        }
    }
}

fn expect_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerting_rules_pass_promtool_check() {
    let Some(promtool) = promtool("alerting_rules_pass_promtool_check") else {
        return;
    };
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(workspace().join("docs/alerts.yml"))
        .output()
        .unwrap();
    expect_success("promtool check rules docs/alerts.yml", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 3 rules found"), "{text}");
}

#[test]
fn alerting_rules_pass_their_unit_tests() {
    let Some(promtool) = promtool("alerting_rules_pass_their_unit_tests") else {
        return;
    };
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(workspace().join("docs/alerts.test.yml"))
        .output()
        .unwrap();
    expect_success("promtool test rules docs/alerts.test.yml", &out);
}

/// `systemd-analyze verify` of the unit, its ExecStart pointed at the binary under test (verify
/// fails on a command that is not there). It works offline, without a running systemd; it
/// exits 0 on an unknown key or a value it cannot parse, which it only logs, so any output
/// fails too. `--man=no`: the man page is not installed here.
#[test]
fn unit_passes_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        vgpu_trace_fixtures::skip_test(
            "unit_passes_systemd_analyze_verify",
            "no /usr/bin/systemd-analyze (Debian: systemd)",
        );
        return;
    }
    let text = std::fs::read_to_string(unit_source()).unwrap();
    let shipped = "ExecStart=/usr/bin/vgpu-trace ";
    assert!(text.contains(shipped), "{text}");
    let text = text.replace(
        shipped,
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_vgpu-trace")),
    );
    let dir = temp_dir("unit");
    let unit = dir.path().join("vgpu-trace-watch.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    expect_success("systemd-analyze verify", &out);
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify complained:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unit's settings, `Key=value` lines by key (comments and sections dropped).
fn settings(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .filter_map(|l| l.split_once('='))
        .collect()
}

/// What the tracer cannot work without, and the sandboxing it cannot work under
/// (docs/watch.md): a change that "hardens" the unit further must be tried on a host first.
#[test]
fn unit_keeps_what_the_tracer_needs() {
    let text = std::fs::read_to_string(unit_source()).unwrap();
    let settings = settings(&text);
    let value = |key: &str| {
        let values: Vec<&str> = settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect();
        assert!(values.len() <= 1, "{key} set twice: {values:?}");
        values.first().copied()
    };
    for (key, expected) in [
        (
            "ExecStart",
            "/usr/bin/vgpu-trace watch --unit ollama.service --records /var/lib/vgpu-trace \
             --metrics 127.0.0.1:9464",
        ),
        ("Restart", "on-failure"),
        ("StateDirectory", "vgpu-trace"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("LimitMEMLOCK", "infinity"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("KillMode", "control-group"),
    ] {
        assert_eq!(value(key), Some(expected), "{key}");
    }
    let mut caps: Vec<&str> = value("CapabilityBoundingSet")
        .unwrap()
        .split_whitespace()
        .collect();
    caps.sort_unstable();
    assert_eq!(
        caps,
        [
            "CAP_BPF",
            "CAP_DAC_READ_SEARCH",
            "CAP_KILL",
            "CAP_PERFMON",
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_SYS_RESOURCE"
        ]
    );
    let families: Vec<&str> = value("RestrictAddressFamilies")
        .unwrap()
        .split_whitespace()
        .collect();
    for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(families.contains(&family), "{families:?}");
    }
    // A private /tmp or /dev, a /proc without other users' processes, a user namespace of its
    // own: each hides what the tracer reads, or refuses what it does.
    for key in [
        "PrivateTmp",
        "PrivateDevices",
        "ProtectProc",
        "ProcSubset",
        "PrivateUsers",
        "PrivateNetwork",
        "DynamicUser",
        "User",
    ] {
        assert_eq!(value(key), None, "{key} must not be set");
    }
    // System calls: a deny list, of mounts only (an allow list, or a group holding bpf,
    // perf_event_open or ptrace, would end the watch), failing with EPERM rather than killing.
    let filter = value("SystemCallFilter").unwrap();
    let denied = filter
        .strip_prefix('~')
        .unwrap_or_else(|| panic!("SystemCallFilter={filter} is not a deny list"));
    let mut denied: Vec<&str> = denied.split_whitespace().collect();
    denied.sort_unstable();
    assert_eq!(denied, ["@mount", "@swap"]);
    assert_eq!(value("SystemCallErrorNumber"), Some("EPERM"));
}
