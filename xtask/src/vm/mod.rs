//! `cargo xtask vm [--kernel SUITE ...] [--script FILE]`: the kernel matrix's harness. Boots
//! Debian's cloud kernel of each suite under QEMU (TCG) with an initramfs holding busybox, the
//! kit (static tracer, lab, shims, fixtures, glibc) in /kit, and a workload script, and
//! reports the `VGPU-VM key=value` lines the workload printed. Everything lives in
//! target/kernels.
mod initramfs;
mod kernels;
pub mod matrix;
mod qemu;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use crate::{is_root, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// A suite whose kernel to boot (repeatable); all four when none is named.
    #[arg(long = "kernel", value_enum)]
    pub kernels: Vec<Suite>,
    /// A workload of your own (a busybox sh script run as root in each VM), whose
    /// `VGPU-VM key=value` lines are printed; without it, the kernel matrix
    /// (xtask/assets/vm-matrix.sh, also run here) and its table, as `cargo xtask test` runs it.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Take the kit's binaries as target/ has them, unbuilt (say, while the tree is mid-edit).
    #[arg(long)]
    pub no_build: bool,
}

/// How long one boot may take, workload included, before QEMU is killed: a boot is 3 to 5 s,
/// and the matrix workload about 25 s under TCG.
const TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    Bullseye,
    Bookworm,
    Trixie,
    Sid,
}

impl Suite {
    /// Oldest first: 5.10, 6.1, 6.12, then unstable's.
    pub const ALL: [Suite; 4] = [Self::Bullseye, Self::Bookworm, Self::Trixie, Self::Sid];

    pub fn name(self) -> &'static str {
        match self {
            Self::Bullseye => "bullseye",
            Self::Bookworm => "bookworm",
            Self::Trixie => "trixie",
            Self::Sid => "sid",
        }
    }
}

/// One kernel's boot.
pub struct VmRun {
    pub suite: Suite,
    /// `uname -r`.
    pub release: String,
    /// The workload's `VGPU-VM key=value` lines, in order.
    pub results: Vec<(String, String)>,
    /// Wall time of the boot, from starting QEMU to its exit.
    pub seconds: f64,
    pub timed_out: bool,
    /// The workload ran to its end (/init printed VGPU-VM-DONE).
    pub done: bool,
    /// The whole console output.
    pub log: PathBuf,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let start = Instant::now();
    let suites = if opts.kernels.is_empty() {
        Suite::ALL.to_vec()
    } else {
        opts.kernels.clone()
    };
    let Some(script) = &opts.script else {
        return matrix::check(&suites, !opts.no_build);
    };
    let workload =
        std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let runs = matrix(&suites, &workload, !opts.no_build)?;
    for run in &runs {
        let state = if run.timed_out {
            "TIMED OUT"
        } else if run.done {
            "done"
        } else {
            "ENDED EARLY"
        };
        println!(
            "\n== {} {}: {state} in {:.1} s (console: {})",
            run.suite.name(),
            run.release,
            run.seconds,
            run.log.display()
        );
        for (key, value) in &run.results {
            println!("{key}={value}");
        }
    }
    println!("\nxtask: vm: {:.1} s in all", start.elapsed().as_secs_f64());
    ensure!(
        runs.iter().all(|r| r.done),
        "a VM did not run its workload to the end: see its console log"
    );
    Ok(())
}

/// Boots each suite's kernel with `workload` (a busybox sh script) and the kit, in turn;
/// `build`: build the kit's binaries first (else take them as they are in target/).
pub fn matrix(suites: &[Suite], workload: &str, build: bool) -> anyhow::Result<Vec<VmRun>> {
    // apt, busybox and QEMU from Debian's registry, and the tracer's BPF in the VM: root.
    ensure!(
        is_root(),
        "cargo xtask vm needs root (it installs packages)"
    );
    qemu::ensure_installed()?;
    let kernels = kernels::fetch(suites)?;
    let initrd = build_initramfs(workload, build)?;
    let mut runs = Vec::new();
    for kernel in &kernels {
        let log = kernels::kernels_dir()
            .join(kernel.suite.name())
            .join("console.log");
        eprintln!(
            "xtask: booting {} ({}, {})",
            kernel.release,
            kernel.suite.name(),
            kernel.package_version
        );
        let outcome = qemu::boot(&qemu::Boot {
            vmlinuz: &kernel.vmlinuz,
            initrd: &initrd,
            log: &log,
            timeout: TIMEOUT,
            cpus: qemu::CPUS,
        })?;
        runs.push(VmRun {
            suite: kernel.suite,
            release: kernel.release.clone(),
            results: qemu::results(&outcome.output),
            seconds: outcome.seconds,
            timed_out: outcome.timed_out,
            done: outcome.done,
            log,
        });
    }
    Ok(runs)
}

/// busybox, /init, the kit (as `cargo xtask gpu-kit` gathers it, plus fixtures) in /kit,
/// the host's glibc and the other libraries its programs need, and the workload as
/// /workload.sh: target/kernels/initramfs.cpio.gz, rewritten only when something in it changed.
fn build_initramfs(workload: &str, build: bool) -> anyhow::Result<PathBuf> {
    if build {
        crate::gpu_kit::build()?;
    }
    let dir = kernels::kernels_dir();
    let kit = dir.join("kit");
    // dl-child: dl-fixture's fork+exec target, looked for next to it.
    crate::gpu_kit::gather(&kit, &["dl-bench", "storm", "dl-fixture", "dl-child"])?;
    let init = std::fs::read_to_string(workspace_root().join("xtask/assets/vm-init.sh"))
        .context("reading xtask/assets/vm-init.sh")?;
    let mut image = initramfs::Initramfs::new(&init)?;
    image.tree(&kit, Path::new("/kit"))?;
    image.libraries_of_tree(Path::new("/kit"))?;
    // What the fixtures dlopen by name (not in DT_NEEDED): libm (dl-bench, dl-fixture, storm)
    // and libresolv (dl-child).
    for lib in ["libm.so.6", "libresolv.so.2"] {
        image.host_path(&Path::new("/lib/x86_64-linux-gnu").join(lib))?;
    }
    image.bytes("/workload.sh", workload.as_bytes().to_vec(), 0o755);
    let out = dir.join("initramfs.cpio.gz");
    let signature_file = dir.join("initramfs.signature");
    let signature = image.signature()?;
    if out.exists() && std::fs::read_to_string(&signature_file).ok() == Some(signature.clone()) {
        eprintln!("xtask: {}: unchanged", out.display());
        return Ok(out);
    }
    let start = Instant::now();
    let size = image.write(&out)?;
    std::fs::write(&signature_file, signature)?;
    eprintln!(
        "xtask: {}: {:.1} MiB in {:.1} s",
        out.display(),
        size as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}
