//! Arming the CUDA/NVML API uprobes on the libraries known at start: configured shims and the
//! cache's libcuda.so.1 and libnvidia-ml.so.1. Libraries a followed process maps later are
//! armed by the backend's arming thread while the kernel holds that process.
use std::path::Path;

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
