//! What the trace learns from the files behind each load, as events are written: the class of
//! every library a dlopen or ld.so loaded (shim, NVIDIA's driver, bundled copy, ...), a flag when
//! NVIDIA's driver or a copy was loaded where a shim is installed, the object whose DT_NEEDED
//! named an implicit load, and the resolution model's prediction when it differs from what ld.so
//! did. Files are read by the reader thread (`reader.rs`), through the process's root while it
//! lives, else the host's; a fact the reader cannot give in time is left out.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::reader::{Answer, Done, Found, Job, Prediction, Reader};
use super::roots::Roots;
use crate::failure::{FailAs as _, Failure};
use crate::loader::classify::{Api, ShimSet, classify_file};
use crate::loader::elf::ElfFacts;
use crate::loader::ldso::Requester;
use crate::loader::shims;
use crate::model::Class;
use crate::model::{EventKind, Func, Load, TraceEvent};

/// `--shim api=PATH`: the API and the file's real path.
/// What a library file is, read once and shared by every event about it.
struct FileInfo {
    class: Class,
    api: Option<Api>,
    facts: Option<Arc<ElfFacts>>,
}

/// What a process has loaded, for DT_NEEDED attribution and the model's context.
#[derive(Default)]
struct ProcView {
    exe: Option<String>,
    ld_library_path: Option<String>,
    /// Paths as loaded, in load order, with their DT_NEEDED (`None` while unread).
    objects: Vec<(String, Option<Vec<String>>)>,
    /// The shims this process loaded, by API: a driver of the same API loaded after one is
    /// the shim forwarding to it.
    shims: Vec<(Api, String)>,
    /// The container it runs in.
    container: Option<String>,
}

/// Loaders followed up from a DT_NEEDED load, for the resolution model's DT_RPATH chain.
const MAX_LOADERS: usize = 16;

pub struct Enricher {
    shims: ShimSet,
    reader: Reader,
    /// Real path → what the file is (read files only), so each is classified once.
    files: HashMap<String, Arc<FileInfo>>,
    /// Per process, path as loaded → where it led (`None`: asked, not answered yet). Asked as
    /// soon as the event is drained from the kernel, while the process (and often the file)
    /// is still there.
    found: HashMap<u32, HashMap<String, Option<Found>>>,
    /// The answer to the prediction or maps check being waited for (one at a time); one that
    /// comes after its wait ran out is dropped.
    awaiting: Option<u64>,
    answer: Option<Answer>,
    /// Per process, the last time its mappings may have shrunk (a dlclose began, it exec'd or
    /// exited), as drained from the kernel. The maps check runs a reorder window after its
    /// dlopen: a library unloaded by then is absent for reasons that say nothing of the dlopen.
    unmapped: HashMap<u32, u64>,
    procs: HashMap<u32, ProcView>,
    /// The roots of processes in containers and chroots, held from their first event.
    pub roots: Roots,
    /// Shims seen loaded during this trace (a shim is installed even if not configured).
    seen: Vec<Api>,
    /// The configuration file, until it has been read.
    config: Option<std::path::PathBuf>,
    /// The backend does not see ld.so's opens (`attach` under ptrace): what a failed dlopen
    /// tried is predicted.
    pub opens_unseen: bool,
}

impl Enricher {
    /// `flags` (`cuda=PATH`, `nvml=PATH`) now; `config` at the first load, since a traced
    /// installer may write it after tracing starts. Other shims are recognised by SONAME.
    pub fn new(flags: &[String], config: &Path) -> anyhow::Result<Self> {
        let mut me = Self {
            shims: ShimSet::default(),
            reader: Reader::spawn(),
            files: HashMap::new(),
            found: HashMap::new(),
            awaiting: None,
            answer: None,
            unmapped: HashMap::new(),
            procs: HashMap::new(),
            roots: Roots::default(),
            seen: Vec::new(),
            config: Some(config.to_path_buf()),
            opens_unseen: false,
        };
        for shim in shims::from_flags(flags).fail_as(Failure::Usage)? {
            let real = std::fs::canonicalize(&shim.path)
                .with_context(|| format!("--shim {}", shim.path))
                .fail_as(Failure::Usage)?;
            me.shims
                .add(shim.api, &real.to_string_lossy(), &shim.source);
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
        match shims::from_config(&config) {
            Ok(declared) => {
                for shim in declared {
                    let real = std::fs::canonicalize(&shim.path)
                        .map_or(shim.path, |p| p.to_string_lossy().into_owned());
                    self.shims.add(shim.api, &real, &shim.source);
                }
            }
            Err(e) => tracing::warn!("{e:#}"),
        }
    }

    /// The shims' real paths known now (`--shim`, and the configuration if it exists yet),
    /// for arming at start.
    pub fn shim_paths(&mut self) -> Vec<String> {
        self.read_config();
        self.shims.shims.iter().map(|s| s.path.clone()).collect()
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

    /// Asks where `path` leads, once per path and process: a process that dlopens one
    /// library 100k times costs one read.
    pub fn observe(&mut self, pid: u32, path: &str) {
        let paths = self.found.entry(pid).or_default();
        if !paths.contains_key(path) {
            paths.insert(path.to_string(), None);
            self.roots.ensure(pid);
            self.reader.send(Job::File {
                pid,
                path: path.to_string(),
                root: self.roots.of(pid),
            });
        }
    }

    /// `pid`'s mappings may shrink from `ts_ns` on (see `unmapped`).
    pub fn may_unmap(&mut self, pid: u32, ts_ns: u64) {
        let at = self.unmapped.entry(pid).or_default();
        *at = (*at).max(ts_ns);
    }

    /// Which objects a dlopen gained are not in /proc/PID/maps; `None` when that cannot be
    /// told (the process gone, or its mappings changed since the call returned).
    fn maps_missing(
        &mut self,
        pid: u32,
        returned_ns: u64,
        gained: Vec<String>,
    ) -> Option<Vec<String>> {
        if self.unmapped.get(&pid).is_some_and(|&at| at >= returned_ns) {
            return None;
        }
        match self.ask(|id| Job::Maps { id, pid, gained }) {
            Some(Answer::Missing(missing)) => missing,
            _ => None,
        }
    }

    fn absorb(&mut self, done: Done) {
        match done {
            // A process that has ended meanwhile has no use for it.
            Done::File { pid, path, found } => {
                if let Some(paths) = self.found.get_mut(&pid) {
                    paths.insert(path, Some(found));
                }
            }
            Done::Answer { id, answer } => {
                if self.awaiting == Some(id) {
                    self.answer = Some(answer);
                }
            }
        }
    }

    /// Waits (a bounded while) until `ready` holds; false when the reader gave no answer.
    fn wait_for(&mut self, ready: impl Fn(&Self) -> bool) -> bool {
        while let Some(done) = self.reader.ready() {
            self.absorb(done);
        }
        while !ready(self) {
            let Some(done) = self.reader.next() else {
                return false;
            };
            self.absorb(done);
        }
        true
    }

    /// What `path` is in `pid`'s view: read facts, or a class by path alone when the file
    /// could not be read (or not in time).
    fn info(&mut self, pid: u32, path: &str) -> Option<Arc<FileInfo>> {
        self.observe(pid, path);
        let answered = |me: &Self| me.found[&pid].get(path).is_some_and(Option::is_some);
        if !self.wait_for(answered) {
            return None;
        }
        let Found::File { real, facts } = self.found[&pid][path].clone()? else {
            return None;
        };
        if let Some(info) = self.files.get(&real) {
            return Some(Arc::clone(info));
        }
        // Only a file not classified yet needs the shims: the configuration is looked for here,
        // not on every event.
        self.read_config();
        let class = classify_file(&real, facts.as_deref(), &self.shims);
        let api = facts
            .as_ref()
            .and_then(|f| Api::of_soname(f.soname.as_deref().unwrap_or("")));
        let info = Arc::new(FileInfo { class, api, facts });
        if info.facts.is_some() {
            self.files.insert(real, Arc::clone(&info));
        }
        Some(info)
    }

    /// Asks the reader and waits (a bounded while) for its answer.
    fn ask(&mut self, job: impl FnOnce(u64) -> Job) -> Option<Answer> {
        let id = self.reader.id();
        self.awaiting = Some(id);
        self.reader.send(job(id));
        self.wait_for(|me| me.answer.is_some());
        self.awaiting = None;
        self.answer.take()
    }

    /// What to say of `path` (`info`), loaded by `pid`: the shim that loaded it to forward to
    /// it (pass-through), or else a warning if it took a shim's place.
    fn driver_note(
        &mut self,
        pid: u32,
        path: &str,
        info: &FileInfo,
    ) -> (Option<String>, Option<String>) {
        let Some(api) = info.api else {
            return (None, None);
        };
        let view = self.procs.entry(pid).or_default();
        let forwarded_by = view
            .shims
            .iter()
            .find(|(a, shim)| *a == api && shim != path)
            .map(|(_, shim)| shim.clone());
        if info.class == Class::Shim && !view.shims.iter().any(|(a, _)| *a == api) {
            view.shims.push((api, path.to_string()));
        }
        if info.class != Class::Shim && forwarded_by.is_some() {
            return (None, forwarded_by);
        }
        (self.warning(info), None)
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
        let (pid, ts_ns) = (ev.pid, ev.ts_ns);
        match &mut ev.kind {
            EventKind::Exec {
                ppid,
                filename,
                env,
                container,
                ..
            } => {
                // One followed from its exec (a unit's, a watched name) had no parent known to
                // the collector: its parent as of now, where it still runs.
                if *ppid == 0
                    && let Some(stat) = crate::procfs::stat(pid)
                {
                    *ppid = stat.ppid;
                }
                // A process gone before this is read (a discovery child killed at once) is in
                // its parent's container.
                *container = container_of(pid)
                    .or_else(|| self.procs.get(ppid).and_then(|p| p.container.clone()));
                let ld_library_path = env
                    .iter()
                    .find_map(|e| e.value.strip_prefix("LD_LIBRARY_PATH=").map(str::to_string));
                let view = ProcView {
                    exe: Some(filename.value.clone()),
                    ld_library_path,
                    container: container.clone(),
                    ..ProcView::default()
                };
                self.procs.insert(pid, view);
            }
            EventKind::Attached {
                ppid, container, ..
            } => {
                // As for Exec: one gone by now (a `sleep` of a container's shell loop) is in its
                // parent's container.
                *container = container_of(pid)
                    .or_else(|| self.procs.get(ppid).and_then(|p| p.container.clone()));
                self.procs.entry(pid).or_default().container = container.clone();
            }
            EventKind::Call(call) => {
                let failed_open =
                    matches!(call.func, Func::Dlopen | Func::Dlmopen) && call.ok == Some(false);
                if self.opens_unseen
                    && failed_open
                    && let Some(name) = call.name.as_ref().map(|n| n.value.clone())
                {
                    call.predicted_probes = self
                        .prediction(pid, name, None)
                        .map(|p| p.tried)
                        .unwrap_or_default();
                }
                if !call.gained.is_empty() {
                    let gained = call.gained.iter().map(|g| g.value.clone()).collect();
                    let returned = ts_ns + call.duration_ns.unwrap_or(0);
                    call.maps_missing = self.maps_missing(pid, returned, gained);
                }
                let Some(path) = call.path.clone() else {
                    return;
                };
                let Some(info) = self.info(pid, &path.value) else {
                    return;
                };
                call.class = Some(info.class);
                (call.warning, call.forwarded_by) = self.driver_note(pid, &path.value, &info);
            }
            EventKind::Load(load) => self.enrich_load(pid, load),
            // What a process loaded ends with it, so state stays flat however many come and go.
            EventKind::Exit(_) => {
                self.procs.remove(&pid);
                self.found.remove(&pid);
                self.roots.forget(pid);
                // Unless already about a later process of the same pid.
                if self.unmapped.get(&pid).is_some_and(|&at| at <= ts_ns) {
                    self.unmapped.remove(&pid);
                }
            }
            _ => {}
        }
    }

    fn enrich_load(&mut self, pid: u32, load: &mut Load) {
        let info = self.info(pid, &load.path.value);
        if let Some(info) = &info {
            load.class = Some(info.class);
            (load.warning, load.forwarded_by) = self.driver_note(pid, &load.path.value, info);
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
        // The name ld.so searched for: a DT_NEEDED entry, or the dlopen's own argument.
        let searched = match (&load.needed_by, &load.during) {
            (Some(needer), _) => Some((load.name.clone(), Some(needer.clone()))),
            (None, Some(during)) if load.linked => Some((during.value.clone(), None)),
            _ => None,
        };
        let Some((name, needer)) = searched else {
            return;
        };
        let Some(prediction) = self.prediction(pid, name, needer.clone()) else {
            return;
        };
        if needer.is_some() {
            let winner = prediction.winner.unwrap_or_else(|| "not found".into());
            load.predicted = (winner != load.path.value).then_some(winner);
        }
        if load.linked {
            load.predicted_probes = prediction.tried;
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

    /// The resolution model's search for `name` in `pid`'s context, asked by `requester`
    /// (then the executable), or by the executable alone.
    fn prediction(
        &mut self,
        pid: u32,
        name: String,
        requester: Option<String>,
    ) -> Option<Prediction> {
        let (exe, ld_library_path) = self
            .procs
            .get(&pid)
            .map(|v| (v.exe.clone(), v.ld_library_path.clone()))
            .unwrap_or_default();
        // ld.so's chain of loaders (whose DT_RPATH it also searches): each object up to
        // the one that named it in DT_NEEDED, then the executable. Past a dlopen the caller
        // is not known, so the executable stands for it.
        let mut paths: Vec<String> = Vec::new();
        let mut next = requester;
        while let Some(path) = next.take() {
            if paths.contains(&path) || paths.len() >= MAX_LOADERS {
                break;
            }
            next = self.needer(pid, crate::model::file_name(&path));
            paths.push(path);
        }
        paths.extend(exe.filter(|e| !paths.contains(e)));
        let mut chain = Vec::new();
        for path in paths {
            let facts = ElfFacts::clone(self.info(pid, &path)?.facts.as_ref()?);
            chain.push(Requester { path, facts });
        }
        let Answer::Predicted(prediction) = self.ask(|id| Job::Predict {
            id,
            pid,
            name,
            ld_library_path,
            chain,
        })?
        else {
            return None;
        };
        Some(prediction)
    }
}

/// The container `pid` runs in (its runtime's scope, from /proc/PID/cgroup), if any.
fn container_of(pid: u32) -> Option<String> {
    super::cgroup::container_id(&super::cgroup::of_pid(pid)?)
}
