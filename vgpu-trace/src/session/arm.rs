//! Arming the CUDA/NVML API uprobes: on the libraries known at start (configured shims, the
//! cache's libcuda.so.1 and libnvidia-ml.so.1), and on each new one a followed process opens,
//! while the kernel holds that process stopped; then it is continued.
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vgpu_trace_common::path_hash;

use crate::analysis::classify::Api;
use crate::analysis::ldcache::LdCache;
use crate::backend::ebpf::EbpfBackend;

/// Probes the libraries known before anything runs.
pub fn at_start(backend: &mut EbpfBackend, shims: &[String], config: &Path) {
    let mut paths: Vec<String> = shims
        .iter()
        .filter_map(|s| Some(s.split_once('=')?.1.to_string()))
        .collect();
    paths.extend(
        crate::inspect::read_shims_config(config)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, p)| p),
    );
    if let Ok(cache) = std::fs::read("/etc/ld.so.cache")
        .map_err(|_| ())
        .and_then(|b| LdCache::parse(&b).map_err(|_| ()))
    {
        paths.extend(
            cache
                .entries
                .iter()
                .filter(|e| Api::of_soname(&e.soname).is_some())
                .map(|e| e.path.clone()),
        );
    }
    for path in paths {
        arm(backend, Path::new(&path), &path);
    }
}

/// A followed process mapped the library open on `fd` (`path` in its view) and may be
/// stopped: arm the file through the fd (still open: ld.so closes it after mapping), continue.
pub fn on_map(backend: &mut EbpfBackend, pid: u32, fd: u32, path: Option<&str>, stopped: bool) {
    let file = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
    arm(backend, &file, path.unwrap_or(""));
    if stopped {
        resume(pid);
    }
}

fn arm(backend: &mut EbpfBackend, file: &Path, path: &str) {
    if let Err(e) = backend.probe_api(file) {
        tracing::debug!("no API probes on {}: {e:#}", file.display());
    }
    if !path.is_empty()
        && let Err(e) = backend.mark_armed(path_hash(path.as_bytes()))
    {
        tracing::warn!("{e:#}");
    }
}

/// Continues a process the kernel stopped (harmless if it is not stopped).
pub fn resume(pid: u32) {
    if let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGCONT) {
        tracing::debug!("SIGCONT {pid}: {e}");
    }
}
