//! Arming the CUDA/NVML API uprobes on the libraries known at start: configured shims, the
//! cache's libcuda.so.1 and libnvidia-ml.so.1, and the CUDA/NVML libraries in the traced
//! programs' LD_LIBRARY_PATH (where shims are usually installed). A process that maps one of
//! them, by any path, is not held. Libraries a followed process maps later are armed by the
//! backend's arming thread while the kernel holds that process.
use std::path::Path;

use crate::backend::ebpf::EbpfBackend;
use crate::loader::classify::Api;
use crate::loader::fs::RootFs;
use crate::loader::ldcache::LdCache;

/// Names of the libraries the API probes are for: the driver's and NVML's sonames, and what
/// they point at (`libcuda.so.570.x`, a shim's own name when it is not a link).
fn api_name(name: &str) -> bool {
    name.starts_with("libcuda.so") || name.starts_with("libnvidia-ml.so")
}

/// Probes the libraries known before anything runs. `shims`: the declared shims' paths, as
/// the enricher read them; `library_path`: the LD_LIBRARY_PATH directories of what is about
/// to be traced.
pub fn at_start(backend: &mut EbpfBackend, shims: &[String], library_path: &[String]) {
    let mut paths = shims.to_vec();
    if let Ok(cache) = LdCache::load(&RootFs::host()) {
        paths.extend(
            cache
                .entries
                .iter()
                .filter(|e| Api::of_soname(&e.soname).is_some())
                .map(|e| e.path.clone()),
        );
    }
    for dir in library_path.iter().filter(|d| !d.is_empty()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        paths.extend(
            entries
                .flatten()
                .filter(|e| api_name(&e.file_name().to_string_lossy()))
                .map(|e| e.path().to_string_lossy().into_owned()),
        );
    }
    for path in paths {
        if let Err(e) = backend.arm_file(Path::new(&path)) {
            tracing::debug!("no API probes on {path}: {e:#}");
        }
    }
}

/// The directories of an LD_LIBRARY_PATH value.
pub fn library_path(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| v.split([':', ';']).map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(api_name("libcuda.so.1") && api_name("libnvidia-ml.so.570.1"));
        assert!(!api_name("libcudart.so.12") && !api_name("libc.so.6"));
        assert_eq!(library_path(Some("/a::/b")), vec!["/a", "", "/b"]);
        assert!(library_path(None).is_empty());
    }
}
