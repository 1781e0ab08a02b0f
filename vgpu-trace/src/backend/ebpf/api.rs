//! uprobes on the CUDA/NVML discovery functions of one library file, armed before its code
//! runs: at start for files known then, or while the kernel holds a process that just mapped
//! an unarmed one (`STOP_TO_ARM`). Files are armed by identity (device, inode).
use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::maps::HashMap;
use vgpu_trace_common::{api::SPECS, file_key, names};

use super::{EbpfBackend, kernel::Family};
use crate::files::{self, FileId};

impl EbpfBackend {
    /// Probes `file` (if not done) and tells the kernel it is armed: mapping it no longer stops
    /// a process, by whatever path it is reached. A C library (a container's own) gets the
    /// `dl*` probes. Returns the file's identity.
    pub fn arm_file(&mut self, file: &Path) -> anyhow::Result<FileId> {
        let (id, _) = self.probe_api(file)?;
        let shown = std::fs::read_link(file).unwrap_or_else(|_| file.to_path_buf());
        let name = shown.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if super::provides_dl(name) {
            self.probe_dl(file, &shown)?;
        }
        self.mark_armed(armed_key(id))?;
        Ok(id)
    }

    /// Puts entry and return uprobes on every discovery function `file` exports, one
    /// uprobe_multi link each. Returns the file's identity and the number of functions probed
    /// (0 for a file that is not a CUDA/NVML library, or was done).
    fn probe_api(&mut self, file: &Path) -> anyhow::Result<(FileId, usize)> {
        // By identity, not path: /proc/PID/fd/N names another file once N is reused, and one
        // file reached by another path (NVIDIA's driver through a link) is done already; the
        // identity is checked before anything is read, a process may be waiting.
        use std::os::unix::fs::MetadataExt as _;
        let opened = crate::loader::fs::open_regular(file, true)
            .with_context(|| format!("opening {}", file.display()))?;
        let meta = opened.metadata()?;
        let id = (meta.dev(), meta.ino());
        if self.api_probed.contains(&id) {
            return Ok((id, 0));
        }
        self.api_probed.push(id);
        let started = std::time::Instant::now();
        let elf = files::read_elf_file(opened, true)
            .with_context(|| format!("reading {}", file.display()))?;
        let read = started.elapsed();
        // The cookie is the spec's id: its index + 1.
        let points = elf.facts.probe_points(
            SPECS
                .iter()
                .enumerate()
                .map(|(index, spec)| (spec.name, index as u64 + 1)),
        );
        if points.is_empty() {
            return Ok((id, 0));
        }
        self.attach_uprobes(Family::ApiEnter, file, &points)?;
        self.attach_uprobes(Family::ApiReturn, file, &points)?;
        let functions = SPECS.iter().filter(|s| elf.facts.exports(s.name)).count();
        tracing::debug!(
            "probing {functions} discovery functions in {} (symbols read in {read:?}, attached in {:?})",
            file.display(),
            started.elapsed() - read
        );
        Ok((id, functions))
    }

    /// Tells the kernel that the file with this `file_key` is armed: no more stops for it.
    pub fn mark_armed(&mut self, key: u64) -> anyhow::Result<()> {
        let mut map: HashMap<_, u64, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(names::ARMED)
                .ok_or_else(|| anyhow!("map {} missing", names::ARMED))?,
        )?;
        map.insert(&key, &1, 0).context("marking a library armed")
    }
}

/// The kernel's `file_key` of a file known by `stat`'s identity: `st_dev` is the userspace
/// encoding of the device, the kernel keys by its own `dev_t` (`major << 20 | minor`).
pub fn armed_key((dev, ino): FileId) -> u64 {
    let kernel_dev = (libc::major(dev) << 20) | libc::minor(dev);
    file_key(kernel_dev, ino)
}
