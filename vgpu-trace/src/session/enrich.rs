//! What the trace learns from the files behind each load, as events are written: the class of
//! every library a dlopen or ld.so loaded (shim, NVIDIA's driver, bundled copy, ...), a flag when
//! NVIDIA's driver or a copy was loaded where a shim is installed, the object whose DT_NEEDED
//! named an implicit load, and the resolution model's prediction when it differs from what ld.so
//! did. Files are read through the process's root while it lives, else the host's.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::analysis::classify::{Api, Class, ShimSet, classify_file};
use crate::analysis::elf::ElfFacts;
use crate::analysis::fs::{RootFs, canonicalize};
use crate::analysis::ldcache::LdCache;
use crate::analysis::ldso::{self, Context, Platform, Requester};
use crate::inspect::read_shims_config;
use crate::model::{EventKind, Load, TraceEvent};

/// What a library file is, read once and shared by every event about it.
struct FileInfo {
    class: Class,
    api: Option<Api>,
    facts: Option<ElfFacts>,
}

/// What a process has loaded, for DT_NEEDED attribution and the model's context.
#[derive(Default)]
struct ProcView {
    exe: Option<String>,
    ld_library_path: Option<String>,
    /// Paths as loaded, in load order, with their DT_NEEDED (`None` while unread).
    objects: Vec<(String, Option<Vec<String>>)>,
}

#[derive(Default)]
pub struct Enricher {
    shims: ShimSet,
    /// Real path → what the file is, so each file is read once.
    files: HashMap<String, Arc<FileInfo>>,
    /// (pid, path as loaded) → real path, noted as soon as the event is drained from the
    /// kernel, while the process (and often the file) is still there.
    early: HashMap<u32, HashMap<String, String>>,
    procs: HashMap<u32, ProcView>,
    /// Shims seen loaded during this trace (a shim is installed even if not configured).
    seen: Vec<Api>,
    /// The configuration file, until it has been read.
    config: Option<std::path::PathBuf>,
    platform: Option<Platform>,
    cache: Option<Option<LdCache>>,
    /// The last file that could not be read, classified by path for the event at hand.
    unread: Option<(String, Arc<FileInfo>)>,
    /// Path as loaded → real path, for every file read: a later load of the same path whose
    /// process and file are both gone by now (a short-lived child, a scratch install) is
    /// taken to be the same file.
    by_path: HashMap<String, String>,
}

impl Enricher {
    /// `flags` (`cuda=PATH`, `nvml=PATH`) now; `config` at the first load, since a traced
    /// installer may write it after tracing starts. Other shims are recognised by SONAME.
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
            me.config = None;
        }
        Ok(me)
    }

    /// Reads the configuration once it exists (a traced installer may write it mid-trace).
    fn read_config(&mut self) {
        if !self.config.as_ref().is_some_and(|c| c.exists()) {
            return;
        }
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

    /// The shims known now (`--shim`, and the configuration if it exists yet), for the
    /// record's header.
    pub fn shims_at_start(&mut self) -> Vec<String> {
        self.read_config();
        self.shims
            .shims
            .iter()
            .map(|s| format!("{}={} ({})", s.api.name(), s.path, s.source))
            .collect()
    }

    /// Reads a library as soon as its load or open is drained from the kernel.
    /// Once per path and process: a process that dlopens one library 100k times costs one.
    pub fn observe(&mut self, pid: u32, path: &str) {
        if self
            .early
            .get(&pid)
            .is_some_and(|seen| seen.contains_key(path))
        {
            return;
        }
        if let Some(real) = self.inspect(pid, path) {
            self.early
                .entry(pid)
                .or_default()
                .insert(path.to_string(), real);
        }
    }

    /// The real path of `path` in `pid`'s view, its file read once. The process's root is
    /// tried first; a process that exits meanwhile falls back to the host's view, and a file
    /// gone from both to what the same path was earlier in the trace. A file that cannot be
    /// read is not remembered, so a later look may succeed.
    fn inspect(&mut self, pid: u32, path: &str) -> Option<String> {
        self.read_config();
        let roots = [RootFs::new(format!("/proc/{pid}/root")), RootFs::host()];
        let mut fallback = None;
        for fs in &roots {
            let Ok(real) = canonicalize(fs, Path::new(path)) else {
                continue;
            };
            let real = real.to_string_lossy().into_owned();
            if self.files.contains_key(&real) {
                self.by_path.insert(path.to_string(), real.clone());
                return Some(real);
            }
            // The dynamic section only: what classes and DT_NEEDED need.
            let facts = fs
                .open(Path::new(&real))
                .ok()
                .and_then(|f| crate::files::read_elf_file(f, false).ok())
                .map(|f| f.facts);
            let Some(facts) = facts else {
                fallback.get_or_insert(real);
                continue;
            };
            let api = Api::of_soname(facts.soname.as_deref().unwrap_or(""));
            let class = classify_file(&real, Some(&facts), &self.shims);
            self.files.insert(
                real.clone(),
                Arc::new(FileInfo {
                    class,
                    api,
                    facts: Some(facts),
                }),
            );
            self.by_path.insert(path.to_string(), real.clone());
            return Some(real);
        }
        let Some(real) = fallback else {
            // Nowhere to be found: the same path read earlier in this trace, if it was.
            return self.by_path.get(path).cloned();
        };
        // Unreadable: classify by its path alone, for this event only.
        let class = classify_file(&real, None, &self.shims);
        self.unread = Some((
            real.clone(),
            Arc::new(FileInfo {
                class,
                api: None,
                facts: None,
            }),
        ));
        Some(real)
    }

    fn info(&mut self, pid: u32, path: &str) -> Option<Arc<FileInfo>> {
        let real = match self
            .early
            .get(&pid)
            .and_then(|seen| seen.get(path))
            .filter(|r| self.files.contains_key(*r))
            .cloned()
        {
            Some(real) => real,
            None => self.inspect(pid, path)?,
        };
        match self.files.get(&real) {
            Some(info) => Some(Arc::clone(info)),
            None => self
                .unread
                .take()
                .filter(|(r, _)| *r == real)
                .map(|(_, info)| info),
        }
    }

    /// A warning when NVIDIA's driver or a copy was loaded as a CUDA/NVML library although a
    /// shim is installed (configured, or seen loaded in this trace).
    fn warning(&mut self, info: &FileInfo) -> Option<String> {
        let api = info.api?;
        if info.class == Class::Shim && !self.seen.contains(&api) {
            self.seen.push(api);
        }
        let installed = self.seen.contains(&api) || self.shims.of(api).next().is_some();
        let what = match info.class {
            Class::NvidiaDriver => "NVIDIA's driver",
            Class::OllamaBundled => "a copy bundled with Ollama",
            Class::CudaToolkit => "a CUDA toolkit copy",
            _ => return None,
        };
        installed.then(|| format!("{what} was loaded as {}, not the shim", api.soname()))
    }

    pub fn enrich(&mut self, ev: &mut TraceEvent) {
        let pid = ev.pid;
        match &mut ev.kind {
            EventKind::Exec { filename, env, .. } => {
                let ld_library_path = env
                    .iter()
                    .find_map(|e| e.value.strip_prefix("LD_LIBRARY_PATH=").map(str::to_string));
                let view = ProcView {
                    exe: Some(filename.value.clone()),
                    ld_library_path,
                    objects: Vec::new(),
                };
                self.procs.insert(pid, view);
            }
            EventKind::Call(call) => {
                if !call.gained.is_empty() {
                    call.maps_missing = maps_missing(pid, &call.gained);
                }
                let Some(path) = call.path.clone() else {
                    return;
                };
                let Some(info) = self.info(pid, &path.value) else {
                    return;
                };
                call.class = Some(info.class);
                call.warning = self.warning(&info);
            }
            EventKind::Load(load) => self.enrich_load(pid, load),
            // What a process loaded ends with it, so state stays flat however many come and go.
            EventKind::Exit(_) => {
                self.procs.remove(&pid);
                self.early.remove(&pid);
            }
            _ => {}
        }
    }

    fn enrich_load(&mut self, pid: u32, load: &mut Load) {
        let info = self.info(pid, &load.path.value);
        if let Some(info) = &info {
            load.class = Some(info.class);
            load.warning = self.warning(info);
        }
        let needed = info.and_then(|i| Some(i.facts.as_ref()?.needed.clone()));
        let target = load.during.as_ref().is_some_and(|d| {
            d.value == load.path.value || crate::model::file_name(&d.value) == load.name
        });
        if !target {
            load.needed_by = self.needer(pid, &load.name).or_else(|| {
                let exe = self.procs.get(&pid).and_then(|v| v.exe.clone());
                exe.filter(|_| load.during.is_none())
            });
        }
        let view = self.procs.entry(pid).or_default();
        view.objects.push((load.path.value.clone(), needed));
        if load.needed_by.is_some() {
            load.predicted = self.prediction(pid, load);
        }
    }

    /// The most recent object loaded in `pid` whose DT_NEEDED names `name`. An object whose
    /// file could not be read when it loaded is read now, once more.
    fn needer(&mut self, pid: u32, name: &str) -> Option<String> {
        for i in 0..self.procs.get(&pid)?.objects.len() {
            let (path, needed) = &self.procs[&pid].objects[i];
            if needed.is_none() {
                let path = path.clone();
                let needed = self
                    .info(pid, &path)
                    .and_then(|i| Some(i.facts.as_ref()?.needed.clone()));
                self.procs.get_mut(&pid)?.objects[i].1 = needed;
            }
        }
        self.procs[&pid]
            .objects
            .iter()
            .rev()
            .find(|(_, needed)| needed.as_ref().is_some_and(|n| n.iter().any(|d| d == name)))
            .map(|(path, _)| path.clone())
    }

    /// What the model says ld.so should have loaded for this DT_NEEDED name, if not `load.path`.
    fn prediction(&mut self, pid: u32, load: &Load) -> Option<String> {
        let needer = load.needed_by.clone()?;
        let platform = self
            .platform
            .get_or_insert_with(crate::sysinfo::loader_platform)
            .clone();
        if self.cache.is_none() {
            let bytes = std::fs::read(format!("/proc/{pid}/root/etc/ld.so.cache"))
                .or_else(|_| std::fs::read("/etc/ld.so.cache"));
            self.cache = Some(bytes.ok().and_then(|b| LdCache::parse(&b).ok()));
        }
        let (exe, ld_library_path) = self
            .procs
            .get(&pid)
            .map(|v| (v.exe.clone(), v.ld_library_path.clone()))
            .unwrap_or_default();
        let mut chain = Vec::new();
        for path in [Some(needer.clone()), exe.filter(|e| *e != needer)]
            .into_iter()
            .flatten()
        {
            let facts = self.info(pid, &path)?.facts.clone()?;
            chain.push(Requester { path, facts });
        }
        let cache = self.cache.as_ref().and_then(Option::as_ref);
        let ctx = Context {
            platform: Some(&platform),
            cache,
            ld_library_path,
            chain,
            loaded: Vec::new(),
            cwd: "/".into(),
        };
        let fs = RootFs::new(format!("/proc/{pid}/root"));
        let fs = if Path::new(&format!("/proc/{pid}/root/")).exists() {
            fs
        } else {
            RootFs::host()
        };
        let resolution = ldso::resolve(&load.name, &ctx, &fs);
        let predicted = resolution
            .winner()
            .map_or_else(|| "not found".to_string(), |w| w.path.clone());
        (predicted != load.path.value).then_some(predicted)
    }
}

/// Which of `gained` (paths in the process's view) /proc/PID/maps does not list; `None` when
/// the process is gone. Maps name real files, so each path is resolved in the process's root.
fn maps_missing(pid: u32, gained: &[crate::text::Text]) -> Option<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mapped: std::collections::HashSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let fs = RootFs::new(format!("/proc/{pid}/root"));
    let missing = gained
        .iter()
        .filter(|p| {
            let real =
                canonicalize(&fs, Path::new(&p.value)).map(|r| r.to_string_lossy().into_owned());
            !real.is_ok_and(|r| mapped.contains(r.as_str())) && !mapped.contains(p.value.as_str())
        })
        .map(|p| p.value.clone())
        .collect();
    Some(missing)
}
