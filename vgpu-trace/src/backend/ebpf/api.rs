//! uprobes on the CUDA/NVML discovery functions of one library file, armed before its code
//! runs: at start for files known then, or while the kernel holds a process that just opened
//! an unarmed one (`STOP_TO_ARM`).
use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::maps::HashMap;
use vgpu_trace_common::{api::SPECS, names};

use super::EbpfBackend;
use crate::files;

impl EbpfBackend {
    /// Puts entry and return uprobes on every discovery function `file` exports, one
    /// uprobe_multi link each. Returns the number of functions probed (0 for a file that is not
    /// a CUDA/NVML library, or was done).
    pub fn probe_api(&mut self, file: &Path) -> anyhow::Result<usize> {
        // By identity, not path: /proc/PID/fd/N names another file once N is reused.
        let elf = files::read_elf(file, true, true)
            .with_context(|| format!("reading {}", file.display()))?;
        if self.api_probed.contains(&elf.id) {
            return Ok(0);
        }
        self.api_probed.push(elf.id);
        let points: Vec<(u64, u64)> = SPECS
            .iter()
            .enumerate()
            .flat_map(|(index, spec)| {
                elf.facts
                    .offsets_of(spec.name)
                    .into_iter()
                    .map(move |off| (off, index as u64 + 1))
            })
            .collect();
        if points.is_empty() {
            return Ok(0);
        }
        self.attach_multi("api_enter", file, &points)?;
        self.attach_multi("api_return", file, &points)?;
        let functions = SPECS.iter().filter(|s| elf.facts.exports(s.name)).count();
        tracing::debug!(
            "probing {functions} discovery functions in {}",
            file.display()
        );
        Ok(functions)
    }

    /// Tells the kernel that the path with this hash is armed: no more stops for it.
    pub fn mark_armed(&mut self, hash: u64) -> anyhow::Result<()> {
        let mut map: HashMap<_, u64, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(names::ARMED)
                .ok_or_else(|| anyhow!("map {} missing", names::ARMED))?,
        )?;
        map.insert(&hash, &1, 0).context("marking a library armed")
    }
}
