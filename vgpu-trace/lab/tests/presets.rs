//! Every preset, every era, without the tracer: `ollama serve` ends with the decision the preset
//! documents. Presets with a private ld.so.cache need root (a mount namespace).
use std::process::Command;

use vgpu_lab::ollama::Era;
use vgpu_lab::preset::{self, Outcome};

struct Run {
    code: i32,
    stderr: String,
}

fn run(preset: &str, era: Era) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu-lab"))
        .args(["run", preset, "--era", &format!("{era:?}").to_lowercase()])
        .env_remove("OLLAMA_DEBUG")
        .output()
        .expect("vgpu-lab runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `library=` of the last `inference compute` line.
fn decision(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("msg=\"inference compute\""))?;
    let value = line.split(" library=").nth(1)?.split(' ').next()?;
    Some(value.to_lowercase())
}

fn check(name: &str) {
    let preset = preset::find(name).expect("preset exists");
    for era in [Era::A, Era::B, Era::C] {
        let expected = match preset.expect(era) {
            Outcome::Cuda => "cuda",
            Outcome::Cpu => "cpu",
            Outcome::Hangs => continue,
        };
        let run = run(name, era);
        assert_eq!(run.code, 0, "{name} era {era:?} failed:\n{}", run.stderr);
        assert_eq!(
            decision(&run.stderr).as_deref(),
            Some(expected),
            "{name} era {era:?} ({}):\n{}",
            preset.why,
            run.stderr
        );
    }
}

macro_rules! presets {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            check($name);
        }
    )*};
}

presets! {
    healthy => "healthy",
    shim_off_path => "shim-off-path",
    symlink_to_driver => "symlink-to-driver",
    driver_shadows_shim => "driver-shadows-shim",
    bundled_shadows_shim => "bundled-shadows-shim",
    shim_missing_symbols => "shim-missing-symbols",
    cuinit_no_device => "cuinit-no-device",
    nvml_init_fails => "nvml-init-fails",
    discovery_timeout => "discovery-timeout",
    cudart_export_tables => "cudart-export-tables",
}

#[test]
#[ignore = "needs root: private ld.so.cache in a mount namespace"]
fn healthy_ldconfig() {
    check("healthy-ldconfig");
}

#[test]
#[ignore = "needs root: private ld.so.cache in a mount namespace"]
fn stale_ldcache() {
    check("stale-ldcache");
}

/// Runs wherever NVIDIA's driver is installed (the GPU machines); elsewhere there is nothing
/// to forward to, and the test says so.
#[test]
fn passthrough() {
    if let Err(why) = preset::host_library("libcuda.so.1") {
        eprintln!("skipped: {why}");
        return;
    }
    check("passthrough");
}

#[test]
fn every_preset_has_a_test() {
    let source = include_str!("presets.rs");
    for p in preset::PRESETS {
        assert!(
            source.contains(&format!("\"{}\"", p.name)),
            "preset {} has no test",
            p.name
        );
    }
}

#[test]
fn healthy_era_b_runs_the_documented_children() {
    let run = run("healthy", Era::B);
    let runners: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("msg=\"starting runner\""))
        .collect();
    // First pass for cuda_v12, then the GGML_CUDA_INIT pass for the one device.
    assert_eq!(runners.len(), 2, "{}", run.stderr);
    assert!(
        runners
            .iter()
            .all(|l| l.contains(" runner --ollama-engine --port ")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("library=CUDA"), "{}", run.stderr);
}

#[test]
fn unknown_preset_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vgpu-lab"))
        .args(["run", "no-such"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown preset \"no-such\"") && stderr.contains("healthy"),
        "{stderr}"
    );
}
