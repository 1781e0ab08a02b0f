//! Debian 12's Prometheus (2.42), for the tests of the watch daemon: a Prometheus that scrapes
//! it and evaluates docs/alerts.yml (vgpu-trace/tests/watch.rs), and `promtool check rules` and
//! `promtool test rules` on those rules (tests/watch_packaging.rs). The package is fetched with `apt-get download` and unpacked with
//! `dpkg-deb -x` into target/tools/prometheus, so no service starts and nothing outside target/
//! changes; its binaries need only libc.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};

use crate::{exec, is_root, target_dir};

/// The environment variable the tests find the dir holding `prometheus` and `promtool` by.
pub const ENV: &str = "VGPU_TEST_PROMETHEUS";
/// The version both binaries must report: bookworm's 2.42.0+ds-5+deb12u1 (or a later
/// bookworm update of 2.42).
const SERIES: &str = "2.42.";

/// `BINARY --version`'s first line when it names the pinned series.
fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?.to_string();
    (out.status.success() && first.contains(&format!("version {SERIES}"))).then_some(first)
}

/// The dir holding both binaries once unpacked (target/tools/prometheus/usr/bin), unpacking
/// the package unless a tree of the right version is there. None where it cannot be had
/// without root (no package lists), the tests then saying they were skipped.
pub fn prepare() -> anyhow::Result<Option<PathBuf>> {
    let tree = target_dir().join("tools/prometheus");
    let bin = tree.join("usr/bin");
    if let (Some(v), Some(_)) = (
        version(&bin.join("prometheus")),
        version(&bin.join("promtool")),
    ) {
        eprintln!("xtask: {v}: present");
        return Ok(Some(bin));
    }
    // Download and unpack beside the tree, then move it in whole: an interrupted run leaves
    // no tree that looks finished.
    let download = target_dir().join("tools/prometheus.download");
    let partial = target_dir().join("tools/prometheus.partial");
    for dir in [&tree, &download, &partial] {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::create_dir_all(&download).context("creating target/tools/prometheus.download")?;
    eprintln!(
        "xtask: prometheus {SERIES}x: downloading Debian's package (unpacked, not installed)"
    );
    let fetch = || {
        Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&download)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !fetch() {
        // A fresh machine may have no package lists yet.
        if !is_root() {
            eprintln!(
                "xtask: apt-get download prometheus failed and `apt-get update` needs root: \
                 the tests of the alerting rules are skipped"
            );
            return Ok(None);
        }
        exec(Command::new("apt-get").arg("update"))?;
        if !fetch() {
            bail!(
                "apt-get download prometheus failed (in {})",
                download.display()
            );
        }
    }
    let deb = std::fs::read_dir(&download)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    for binary in ["prometheus", "promtool"] {
        let path = partial.join("usr/bin").join(binary);
        ensure!(
            version(&path).is_some(),
            "{} is not Prometheus {SERIES}x (from {}): is this Debian 12?",
            path.display(),
            deb.display()
        );
    }
    std::fs::rename(&partial, &tree).context("keeping target/tools/prometheus")?;
    let _ = std::fs::remove_dir_all(&download);
    eprintln!(
        "xtask: {}: unpacked in {}",
        version(&bin.join("prometheus")).unwrap_or_default(),
        tree.display()
    );
    Ok(Some(bin))
}
