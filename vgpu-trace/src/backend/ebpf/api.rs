//! uprobes on the CUDA/NVML discovery functions of one library file, armed before its code
//! runs: at start for files known then, or while the kernel holds a process that just opened
//! an unarmed one (`STOP_TO_ARM`).
use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::maps::HashMap;
use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use vgpu_trace_common::{api::SPECS, names};

use super::{EbpfBackend, program};
use crate::analysis::elf;

impl EbpfBackend {
    /// Puts entry and return uprobes on every discovery function `file` exports. Returns the
    /// number of functions probed (0 for a file that is not a CUDA/NVML library, or was done).
    pub fn probe_api(&mut self, file: &Path) -> anyhow::Result<usize> {
        // By identity, not path: /proc/PID/fd/N names another file once N is reused.
        let id =
            crate::procfs::file_id(file).with_context(|| format!("{} is gone", file.display()))?;
        if self.api_probed.contains(&id) {
            return Ok(0);
        }
        let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let facts = elf::parse(&data)
            .with_context(|| format!("{} is not a readable ELF file", file.display()))?;
        let mut probed = 0;
        for (index, spec) in SPECS.iter().enumerate() {
            if !facts.exports(spec.name) {
                continue;
            }
            let point = || UProbeAttachPoint {
                location: UProbeAttachLocation::Symbol(spec.name),
                cookie: Some(index as u64 + 1),
            };
            for name in ["api_enter", "api_return"] {
                let prog: &mut UProbe = program(&mut self.ebpf, name)?;
                prog.attach(point(), file, UProbeScope::AllProcesses)
                    .with_context(|| format!("{name} on {} in {}", spec.name, file.display()))?;
            }
            probed += 1;
        }
        self.api_probed.push(id);
        if probed > 0 {
            tracing::debug!("probing {probed} discovery functions in {}", file.display());
        }
        Ok(probed)
    }

    /// Tells the kernel that the path with this hash is armed: no more stops for it.
    pub fn mark_armed(&mut self, hash: u64) -> anyhow::Result<()> {
        let mut map: HashMap<_, u64, u32> = HashMap::try_from(
            self.ebpf
                .map_mut(names::ARMED)
                .ok_or_else(|| anyhow!("map {} missing", names::ARMED))?,
        )?;
        map.insert(hash, 1, 0).context("marking a library armed")
    }
}
