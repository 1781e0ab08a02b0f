//! Classifying each library a traced dlopen loaded (shim, NVIDIA's driver, bundled copy, ...)
//! and flagging NVIDIA's driver or a bundled copy loaded where a shim is installed.
use std::collections::HashMap;
use std::path::Path;

use crate::analysis::classify::{Api, Class, ShimSet, classify_file};
use crate::analysis::elf;
use crate::analysis::fs::{RootFs, canonicalize};
use anyhow::Context as _;

use crate::inspect::read_shims_config;
use crate::model::{EventKind, TraceEvent};

const MAX_ELF: u64 = 512 << 20;

#[derive(Default)]
pub struct LoadClassifier {
    shims: ShimSet,
    /// Real path → class and API, so each file is read once.
    known: HashMap<String, (Class, Option<Api>)>,
    /// (pid, path as loaded) → what it is, noted as soon as the load is drained from the
    /// kernel, while the process (and often the file) is still there.
    loads: HashMap<(u32, String), (Class, Option<Api>)>,
    /// Shims seen loaded during this trace (a shim is installed even if not configured).
    seen: Vec<Api>,
    /// The configuration file, until it has been read.
    config: Option<std::path::PathBuf>,
}

impl LoadClassifier {
    /// `flags` (`cuda=PATH`, `nvml=PATH`) now; `config` when the first load is seen, since a
    /// traced installer may write it after tracing starts. The rest are recognised by SONAME.
    pub fn new(flags: &[String], config: &Path) -> anyhow::Result<Self> {
        let mut me = Self {
            config: Some(config.to_path_buf()),
            ..Self::default()
        };
        for flag in flags {
            let (api, path) = flag
                .split_once('=')
                .with_context(|| format!("--shim {flag:?}: expected cuda=PATH or nvml=PATH"))?;
            let api = Api::parse(api).map_err(anyhow::Error::msg)?;
            let real = std::fs::canonicalize(path).with_context(|| format!("--shim {path}"))?;
            me.shims.add(api, &real.to_string_lossy(), "--shim");
        }
        if !flags.is_empty() {
            me.config = None;
        }
        Ok(me)
    }

    fn read_config(&mut self) {
        let Some(config) = self.config.take() else {
            return;
        };
        match read_shims_config(&config) {
            Ok(entries) => {
                for (api, path) in entries {
                    let Ok(api) = Api::parse(&api) else { continue };
                    let real = std::fs::canonicalize(&path)
                        .map_or(path, |p| p.to_string_lossy().into_owned());
                    self.shims.add(api, &real, &config.display().to_string());
                }
            }
            Err(e) => tracing::warn!("{e:#}"),
        }
    }

    /// Classifies a load right away; `enrich` uses the answer when the event is written.
    pub fn observe(&mut self, pid: u32, path: &str) {
        if let Some(found) = self.lookup(pid, path) {
            self.loads.insert((pid, path.to_string()), found);
        }
    }

    fn lookup(&mut self, pid: u32, path: &str) -> Option<(Class, Option<Api>)> {
        self.read_config();
        // The path is in the process's view: look through its root while it lives, else (it
        // exited: discovery children live a second) through ours.
        let roots = [RootFs::new(format!("/proc/{pid}/root")), RootFs::host()];
        let (fs, real) = roots.iter().find_map(|fs| {
            let real = canonicalize(fs, Path::new(path)).ok()?;
            Some((fs, real.to_string_lossy().into_owned()))
        })?;
        let shims = &self.shims;
        Some(*self.known.entry(real.clone()).or_insert_with(|| {
            let facts = std::fs::File::open(fs.outside(Path::new(&real)))
                .ok()
                .and_then(|f| {
                    use std::io::Read as _;
                    let mut data = Vec::new();
                    f.take(MAX_ELF).read_to_end(&mut data).ok()?;
                    elf::parse(&data).ok()
                });
            let api = facts
                .as_ref()
                .and_then(|f| Api::of_soname(f.soname.as_deref()?));
            (classify_file(&real, facts.as_ref(), shims), api)
        }))
    }

    pub fn enrich(&mut self, ev: &mut TraceEvent) {
        let EventKind::Call(call) = &mut ev.kind else {
            return;
        };
        let Some(path) = &call.path else { return };
        let key = (ev.pid, path.value.clone());
        let Some((class, api)) = self
            .loads
            .remove(&key)
            .or_else(|| self.lookup(ev.pid, &path.value))
        else {
            return;
        };
        call.class = Some(class);
        let Some(api) = api else { return };
        if class == Class::Shim && !self.seen.contains(&api) {
            self.seen.push(api);
        }
        let shim_installed = self.seen.contains(&api) || self.shims.of(api).next().is_some();
        if shim_installed
            && matches!(
                class,
                Class::NvidiaDriver | Class::OllamaBundled | Class::CudaToolkit
            )
        {
            let what = match class {
                Class::NvidiaDriver => "NVIDIA's driver",
                Class::OllamaBundled => "a copy bundled with Ollama",
                _ => "a CUDA toolkit copy",
            };
            call.warning = Some(format!(
                "{what} was loaded as {}, not the shim",
                api.soname()
            ));
        }
    }
}
