//! `doctor` and `resolve` on the lab's presets (built in scratch roots by `vgpu-lab exec`) and
//! on the seed team's root causes, each reported by the right failing check with its fix.
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

mod common;
use common::fixture;

fn tracer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vgpu-trace"))
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Checks that failed, by id.
fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap()
}

/// `vgpu-trace doctor --format json` inside a lab preset, with the preset's shim config.
fn doctor_in(preset: &str) -> (Value, Option<i32>) {
    let script = format!(
        "exec {} doctor --format json --shims-config \"$VGPU_LAB_ROOT/etc/vgpu-trace/shims.toml\"",
        tracer().display()
    );
    let out = Command::new(fixture("vgpu-lab"))
        .args(["exec", preset, "--", "sh", "-c", &script])
        .output()
        .unwrap();
    (json(&out), out.status.code())
}

#[test]
#[ignore = "needs root: two presets use a private ld.so.cache (cargo xtask test runs it)"]
fn presets_fail_the_right_checks() {
    // Runtime failures (cuInit's code, NVML init, hangs, cudart's export tables) are invisible to
    // a static check: those presets pass, and the tracer is what shows them.
    let expected: &[(&str, &[&str])] = &[
        ("healthy", &[]),
        ("healthy-ldconfig", &[]),
        ("shim-off-path", &["search-order"]),
        ("symlink-to-driver", &["links", "search-order", "shadowing"]),
        ("stale-ldcache", &["ld-cache", "search-order"]),
        ("driver-shadows-shim", &["search-order", "shadowing"]),
        ("bundled-shadows-shim", &["search-order", "shadowing"]),
        ("shim-missing-symbols", &["shims", "symbols"]),
        ("cuinit-no-device", &[]),
        ("nvml-init-fails", &[]),
        ("discovery-timeout", &[]),
        ("cudart-export-tables", &[]),
    ];
    for (preset, want) in expected {
        let (report, code) = doctor_in(preset);
        assert_eq!(failed(&report), *want, "{preset}: {report:#}");
        assert_eq!(code, Some(if want.is_empty() { 0 } else { 1 }), "{preset}");
        for id in *want {
            assert!(
                check(&report, id)["fix"].is_string(),
                "{preset}: {id} has no fix"
            );
        }
    }
    let (report, _) = doctor_in("shim-off-path");
    let fix = check(&report, "search-order")["fix"].as_str().unwrap();
    assert!(fix.contains("/opt/vgpu/lib is not searched"), "{fix}");
    let (report, _) = doctor_in("shim-missing-symbols");
    let summary = check(&report, "symbols")["summary"].as_str().unwrap();
    assert!(
        summary.contains("cuMemCreate") && summary.contains("cuGetProcAddress_v2"),
        "{summary}"
    );
}

#[test]
fn this_machine_reports_no_shim_without_error() {
    let out = Command::new(tracer())
        .args(["doctor", "--shims-config", "/nonexistent"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  shims         no shim installed"),
        "{stdout}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1));
}

/// A private scratch dir (random name), removed on drop.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new(tag: &str) -> Self {
        Self(common::temp_dir(&format!("doctor-{tag}")))
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

fn doctor(args: &[String]) -> Value {
    let out = Command::new(tracer())
        .args(["doctor", "--format", "json"])
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    json(&out)
}

#[test]
fn seed_cause_wrong_soname() {
    let dir = Scratch::new("soname");
    let src = dir.path().join("shim.c");
    std::fs::write(&src, "int cuInit(unsigned f) { return f; }\n").unwrap();
    let lib = dir.path().join("libvgpu-cuda.so");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libvgpu-cuda.so", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap();
    assert!(ok.success());
    let report = doctor(&[
        format!("--shim=cuda={}", lib.display()),
        "--shims-config=/nonexistent".into(),
    ]);
    let files = check(&report, "shim-files");
    assert_eq!(files["status"], "fail", "{report:#}");
    assert!(
        files["summary"]
            .as_str()
            .unwrap()
            .contains("SONAME is libvgpu-cuda.so, not libcuda.so.1")
    );
    assert!(
        files["fix"]
            .as_str()
            .unwrap()
            .contains("-Wl,-soname,libcuda.so.1")
    );
}

#[test]
fn seed_cause_missing_soname_link() {
    let dir = Scratch::new("link");
    let lib = dir.path().join("libvgpu-cuda.so");
    std::fs::copy(fixture("libvgpu_cuda.so"), &lib).unwrap();
    let report = doctor(&[
        format!("--shim=cuda={}", lib.display()),
        format!("--env=LD_LIBRARY_PATH={}", dir.path().display()),
        "--shims-config=/nonexistent".into(),
    ]);
    let order = check(&report, "search-order");
    assert_eq!(order["status"], "fail", "{report:#}");
    let fix = order["fix"].as_str().unwrap();
    assert!(
        fix.contains("is searched but has no libcuda.so.1: ln -s"),
        "{fix}"
    );
    assert_eq!(check(&report, "shim-files")["status"], "pass");
    assert_eq!(check(&report, "symbols")["status"], "pass");
}

#[test]
#[ignore = "needs root: a private ld.so.cache (cargo xtask test runs it)"]
fn resolve_explains_the_winner() {
    let script = format!(
        "exec {} resolve libcuda.so.1 --format json --exe \"$VGPU_LAB_ROOT/usr/local/lib/ollama/cuda_v12/libggml-cuda.so\" \
         --env \"LD_LIBRARY_PATH=$VGPU_LAB_ROOT/usr/local/lib/ollama:$VGPU_LAB_ROOT/usr/local/lib/ollama/cuda_v12:$LD_LIBRARY_PATH\"",
        tracer().display()
    );
    for (preset, class, origin) in [
        ("healthy", "shim", "LD_LIBRARY_PATH"),
        ("healthy-ldconfig", "shim", "ld.so.cache"),
        ("bundled-shadows-shim", "nvidia-driver", "LD_LIBRARY_PATH"),
    ] {
        let out = Command::new(fixture("vgpu-lab"))
            .args(["exec", preset, "--", "sh", "-c", &script])
            .output()
            .unwrap();
        let r = json(&out);
        assert_eq!(r["class"], class, "{preset}: {r:#}");
        let winner = r["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["verdict"] == "LOADED")
            .unwrap();
        assert_eq!(winner["origin"], origin, "{preset}: {r:#}");
        // Ollama's own dirs come first, each tried with its hwcaps subdirectories.
        assert!(
            r["candidates"][0]["path"]
                .as_str()
                .unwrap()
                .contains("/lib/ollama/"),
            "{r:#}"
        );
    }
}

/// Bad input is exit 2 (a failed check is 1), with a message that says what was wrong.
#[test]
fn bad_input_is_a_clear_error() {
    for (args, says) in [
        (
            &["doctor", "--pid", "999999999"][..],
            "no process 999999999",
        ),
        (
            &["resolve", "libx.so", "--root", "/nonexistent"],
            "not a directory",
        ),
        (&["doctor", "--shim", "gpu=/x"], "unknown shim kind \"gpu\""),
        (
            &["resolve", "libx.so", "--exe", "/etc/hostname"],
            "not a readable ELF file",
        ),
    ] {
        let out = Command::new(tracer()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
