//! `cargo xtask shims build | install --prefix DIR [--layout lib|seed]`.
use std::path::PathBuf;
use std::process::Command as Process;

use crate::{cargo, exec, target_dir, workspace_root};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build libvgpu-cuda.so and libvgpu-nvml.so (release).
    Build,
    /// Build, then install the shims under PREFIX.
    Install {
        #[arg(long)]
        prefix: PathBuf,
        /// `lib`: PREFIX/lib with soname links; `seed`: files in PREFIX/opt/vgpu/lib and
        /// soname links in six library dirs under PREFIX, as the seed team did.
        #[arg(long, default_value = "lib")]
        layout: String,
    },
}

pub fn build() -> anyhow::Result<PathBuf> {
    exec(cargo().current_dir(workspace_root()).args([
        "build",
        "--release",
        "-p",
        "vgpu-cuda",
        "-p",
        "vgpu-nvml",
        "-p",
        "vgpu-lab",
    ]))?;
    Ok(target_dir().join("release"))
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Build => {
            let bin = build()?;
            println!(
                "{}\n{}",
                bin.join("libvgpu_cuda.so").display(),
                bin.join("libvgpu_nvml.so").display()
            );
            Ok(())
        }
        Command::Install { prefix, layout } => {
            let bin = build()?;
            exec(
                Process::new(bin.join("vgpu-lab"))
                    .args(["install-shims", "--layout", &layout, "--prefix"])
                    .arg(&prefix),
            )
        }
    }
}
