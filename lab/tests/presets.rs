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
    run_with(preset, era, None)
}

/// `run`, with OLLAMA_DEBUG set to `debug` (2: trace lines and the children's output too).
fn run_with(preset: &str, era: Era, debug: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vgpu-lab"));
    cmd.args(["run", preset, "--era", era.name()]);
    match debug {
        Some(level) => cmd.env("OLLAMA_DEBUG", level),
        None => cmd.env_remove("OLLAMA_DEBUG"),
    };
    let out = cmd.output().expect("vgpu-lab runs");
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
    for era in Era::ALL {
        let expected = match preset.expect(era) {
            Outcome::Cuda => "cuda",
            Outcome::Cpu => "cpu",
            Outcome::Vulkan => "vulkan",
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
    cc_not_compiled => "cc-not-compiled",
    driver_too_old_for_v13 => "driver-too-old-for-v13",
    vulkan_instead => "vulkan-instead",
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
/// to forward to, and the test is recorded as skipped (`cargo xtask test` reports it so).
#[test]
fn passthrough() {
    if let Err(why) = preset::host_library("libcuda.so.1") {
        vgpu_trace_fixtures::skip_test("passthrough", &format!("{why:#}"));
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

/// `vgpu-trace check` rules the tracer's root test holds each record to.
#[test]
fn every_preset_has_its_check_rules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("expect");
    let era_d = [
        "healthy",
        "cudart-export-tables",
        "cc-not-compiled",
        "driver-too-old-for-v13",
        "vulkan-instead",
    ];
    for p in preset::PRESETS.iter().filter(|p| p.name != "passthrough") {
        let b = dir.join(format!("{}-b.toml", p.name));
        assert!(b.exists(), "{} is missing", b.display());
    }
    for name in era_d {
        let d = dir.join(format!("{name}-d.toml"));
        assert!(d.exists(), "{} is missing", d.display());
    }
}

#[test]
fn era_d_probes_every_dir_and_names_the_one_it_kept() {
    // Ollama names the llama-server it starts for discovery only at trace level.
    let run = run_with("driver-too-old-for-v13", Era::D, Some("2"));
    let servers = run
        .stderr
        .lines()
        .filter(|l| {
            l.contains("level=TRACE") && l.contains("msg=\"running llama-server for discovery\"")
        })
        .count();
    // cuda_v12, cuda_v13 and vulkan, then cuda_v12's device again.
    assert_eq!(servers, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("library=CUDA") && run.stderr.contains("libdirs=ollama,cuda_v12"),
        "{}",
        run.stderr
    );
}

/// At Ollama's default level discovery says only that it starts and what it concluded: no
/// child is named (v0.32.15 logs none of them at INFO).
#[test]
fn era_c_and_d_name_no_discovery_child_at_info() {
    for era in [Era::C, Era::D] {
        let run = run("healthy", era);
        let infos: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("time=") && l.contains("level=INFO"))
            .collect();
        assert!(
            infos
                .iter()
                .all(|l| l.contains("msg=\"discovering available GPUs...\"")
                    || l.contains("msg=\"inference compute\"")),
            "era {era:?}: {infos:#?}"
        );
        assert!(!run.stderr.contains("llama-server"), "{}", run.stderr);
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
