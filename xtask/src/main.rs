//! Developer tasks: `cargo xtask setup | test | demo | bench | dist | install`.
mod bench;
mod dist;
mod fuzz;
mod gpu_kit;
mod prometheus;
mod real_ollama;
mod setup;
mod shims;
mod testbed;
mod vm;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "vgpu-trace developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF programs and the shims' glibc floor build need
    /// (idempotent).
    Setup,
    /// Setup, then formatting, lints and every test (root tests included when root).
    Test,
    /// Setup, build, and trace the bundled scenario.
    Demo,
    /// Setup, then measure tracing overhead against baselines in the same run.
    Bench(bench::Options),
    /// Build a static tracer, the lab and the shims into target/gpu-kit for a GPU machine.
    GpuKit,
    /// Build the release tarball (static tracer, shims, man pages, completions, README,
    /// licences) and a .deb of the same files into target/dist.
    Dist,
    /// Build and install what the tarball holds under PREFIX.
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: std::path::PathBuf,
    },
    /// Fuzz the parsers of outside input (records, rules, ELF files, ld.so.cache, ld.so.conf,
    /// shims.toml) with cargo-fuzz, then minimise each kept corpus.
    Fuzz(fuzz::Options),
    /// Build or install the reference CUDA and NVML shims.
    #[command(subcommand)]
    Shims(shims::Command),
    /// Boot Debian's kernels (bullseye 5.10 .. sid) under QEMU with the kit and a workload
    /// script; print the `VGPU-VM key=value` lines each printed (target/kernels).
    Vm(vm::Options),
}

/// Runs a command, failing with its command line when it fails.
pub fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The toolchain the workspace builds with: aya 0.16 needs rustc 1.98, and 1.98.0's LLVM is
/// bpf-linker's, so it builds the eBPF crate too. `cargo xtask` itself may run on an older default.
pub const TOOLCHAIN: &str = "1.98.0";

/// cargo through rustup's proxy, on the pinned toolchain.
pub fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.env("RUSTUP_TOOLCHAIN", TOOLCHAIN);
    c
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Where cargo puts binaries of the given profile.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn test() -> anyhow::Result<()> {
    let root = workspace_root();
    exec(
        cargo()
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    exec(
        cargo()
            .current_dir(&root)
            .args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // Every default member: tests run the binaries, the lab and the shims cargo puts in target/.
    exec(cargo().current_dir(&root).args(["build"]))?;
    let mut cmd = cargo();
    cmd.current_dir(&root).args(["test"]);
    // The shims users get, for the tests of their glibc floor (vgpu-trace/tests/glibc_floor.rs).
    cmd.env("VGPU_TEST_FLOOR_SHIMS", shims::build()?);
    // Tests that cannot run here record why in this file; they are reported as skipped.
    let skips = target_dir().join("test-skips.txt");
    let _ = std::fs::remove_file(&skips);
    cmd.env("VGPU_TEST_SKIPS", &skips);
    // Every session a test starts is on eBPF or fails: a kernel that refuses the programs must
    // turn the suite red, not pass it on ptrace. Tests of ptrace and of the fall back say so.
    cmd.env("VGPU_TRACE_BACKEND", "ebpf");
    if let Some((bookworm, bullseye)) = testbed::prepare()? {
        cmd.env(testbed::ROOTFS_ENV, bookworm)
            .env(testbed::ROOTFS_BULLSEYE_ENV, bullseye);
    }
    if let Some(ollama) = real_ollama::prepare()? {
        cmd.env(real_ollama::ENV, ollama);
    }
    // Debian's Prometheus and promtool: the watch daemon scraped, its alerting rules checked
    // and unit-tested (vgpu-trace/tests/watch.rs, watch_packaging.rs).
    if let Some(prometheus) = prometheus::prepare()? {
        cmd.env(prometheus::ENV, prometheus);
    }
    if is_root() {
        // Root tests load BPF programs; they are #[ignore]d for plain `cargo test`.
        cmd.args(["--", "--include-ignored"]);
    } else {
        eprintln!("xtask: not root: tests that load BPF programs are skipped");
    }
    // Pass the output through, adding up cargo's per-binary results into one closing line.
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in
        std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("piped")))
    {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split([';', '.'])
                    .find_map(|p| p.trim().strip_suffix(word)?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    // libtest counts a test that returned early as passed; these said they did not run.
    let skipped: Vec<String> = std::fs::read_to_string(&skips)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    for line in &skipped {
        println!("skipped: {line}");
    }
    let passed = passed.saturating_sub(skipped.len() as u64);
    println!(
        "{passed} passed, {failed} failed, {} skipped",
        skipped.len()
    );
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    // What users install: built as a release would be, unpacked, run, and its man page read.
    dist::dist()?;
    // What must hold on users' kernels, on Debian's 5.10, 6.1, 6.12 and newest in QEMU and on
    // this machine's: eBPF loads, verdicts and exact counts (needs root, as the tests do).
    if is_root() {
        vm::matrix::check(&vm::Suite::ALL, true)?;
    } else {
        eprintln!("xtask: not root: the kernel matrix is skipped");
    }
    Ok(())
}

/// The bundled scenario: the lab's Ollama stand-in (era B) on a healthy shim install, then on
/// one whose shim lacks the symbols libggml-cuda.so imports.
fn demo() -> anyhow::Result<()> {
    let root = workspace_root();
    exec(cargo().current_dir(&root).args(["build", "--release"]))?;
    let bin = target_dir().join("release");
    if !is_root() {
        bail!("the demo traces from the kernel and needs root: run it with sudo");
    }
    for (preset, what) in [
        ("healthy", "shims on the service's LD_LIBRARY_PATH"),
        (
            "shim-missing-symbols",
            "an early shim without the symbols libggml-cuda.so imports",
        ),
    ] {
        println!("\nxtask: ollama serve (era B) with {what} — vgpu-lab preset {preset}\n");
        exec(
            Command::new(bin.join("vgpu-trace"))
                .args(["run", "--"])
                .arg(bin.join("vgpu-lab"))
                .args(["run", preset, "--era", "b"])
                // cargo's own library path is noise in the traced environment.
                .env_remove("LD_LIBRARY_PATH"),
        )?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Test => {
            setup::run()?;
            test()
        }
        Task::Demo => {
            setup::run()?;
            demo()
        }
        Task::Bench(opts) => {
            setup::run()?;
            bench::run(&opts)
        }
        Task::Shims(cmd) => shims::run(cmd),
        Task::Fuzz(opts) => fuzz::run(&opts),
        Task::Vm(opts) => {
            setup::run()?;
            vm::run(&opts)
        }
        Task::GpuKit => {
            setup::run()?;
            gpu_kit::run()
        }
        Task::Dist => {
            setup::run()?;
            dist::dist()
        }
        Task::Install { prefix } => {
            setup::run()?;
            dist::install(&prefix)
        }
    }
}
