//! `cargo xtask shims build | install --prefix DIR [--layout lib|seed]`: the shims users get,
//! linked by cargo-zigbuild against glibc 2.17's symbol versions (the floor they load on), in
//! target/x86_64-unknown-linux-gnu/release. Tests use cargo's own build in target/<profile>.
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context as _, ensure};

use crate::{cargo, exec, target_dir, workspace_root};

/// The oldest glibc the shims load on: Rust's own floor for this target.
pub const GLIBC_FLOOR: [u32; 2] = [2, 17];
const GNU: &str = "x86_64-unknown-linux-gnu";
/// Where cargo-zigbuild puts it, under the target dir.
pub const FLOOR_DIR: &str = "x86_64-unknown-linux-gnu/release";
pub const FILES: [&str; 2] = ["libvgpu_cuda.so", "libvgpu_nvml.so"];

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build libvgpu_cuda.so and libvgpu_nvml.so (release, for the glibc floor).
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

/// The floor build (installing zig and cargo-zigbuild if missing), each shim checked against
/// the floor; returns the dir holding them.
pub fn build() -> anyhow::Result<PathBuf> {
    let zig = crate::setup::floor_tools()?;
    let [major, minor] = GLIBC_FLOOR;
    exec(
        cargo()
            .current_dir(workspace_root())
            .args(["zigbuild", "--release", "--target"])
            .arg(format!("{GNU}.{major}.{minor}"))
            .args(["-p", "vgpu-cuda", "-p", "vgpu-nvml"])
            .env("CARGO_ZIGBUILD_ZIG_PATH", zig),
    )?;
    let dir = target_dir().join(FLOOR_DIR);
    for file in FILES {
        check_floor(&dir.join(file))?;
    }
    Ok(dir)
}

/// Fails if `lib` needs a glibc symbol version above the floor (as `objdump -T` lists them).
pub fn check_floor(lib: &Path) -> anyhow::Result<()> {
    let out = Process::new("objdump")
        .arg("-T")
        .arg(lib)
        .output()
        .context("cannot run objdump (binutils)")?;
    ensure!(
        out.status.success(),
        "objdump -T {}: {out:?}",
        lib.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let versions: Vec<Vec<u32>> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .map(|v| {
            v.split('.')
                .map(|n| n.parse().unwrap_or(u32::MAX))
                .collect()
        })
        .collect();
    let max = versions.iter().max().context("no GLIBC_ versions")?;
    let [major, minor] = GLIBC_FLOOR;
    ensure!(
        max.as_slice() <= GLIBC_FLOOR.as_slice(),
        "{} needs GLIBC_{}, above the floor {major}.{minor}",
        lib.display(),
        max.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
    );
    Ok(())
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Build => {
            let dir = build()?;
            for file in FILES {
                println!("{}", dir.join(file).display());
            }
            Ok(())
        }
        Command::Install { prefix, layout } => {
            let dir = build()?;
            exec(cargo().current_dir(workspace_root()).args([
                "build",
                "--release",
                "-p",
                "vgpu-lab",
            ]))?;
            exec(
                Process::new(target_dir().join("release/vgpu-lab"))
                    .args(["install-shims", "--layout", &layout, "--from"])
                    .arg(&dir)
                    .arg("--prefix")
                    .arg(&prefix),
            )
        }
    }
}
