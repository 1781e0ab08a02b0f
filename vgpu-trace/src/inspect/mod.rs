//! `doctor` and `resolve`: gather what the pure analysis needs (a process's root, environment
//! and mapped objects, ld.so.cache and ld.so.conf, the Ollama install, the configured shims),
//! run it, and print the answer.
pub mod kernel;
mod report;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::doctor::{self, Ollama, ProcessView, Setup};
use crate::failure::{FailAs as _, Failure};
use crate::loader::classify::ShimSet;
use crate::loader::elf::ElfFacts;
use crate::loader::fs::{self, Fs, RootFs};
use crate::loader::ldcache::LdCache;
use crate::loader::ldconf;
use crate::loader::ldso::{self, Context, Requester};
use crate::loader::shims;
use crate::procfs;

pub use report::Format;

/// Whose view: a running process, a root directory, or this process's own environment.
#[derive(Default)]
pub struct Target {
    pub pid: Option<u32>,
    pub root: Option<PathBuf>,
    /// `K=V` overrides of the environment.
    pub env: Vec<String>,
    /// The loading object for `resolve` (default: the process's executable).
    pub exe: Option<String>,
}

struct View {
    fs: RootFs,
    env: HashMap<String, String>,
    pid: Option<u32>,
    exe: Option<String>,
    facts: RefCell<HashMap<String, Option<ElfFacts>>>,
}

impl View {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let mut env: HashMap<String, String> = HashMap::new();
        let mut exe = target.exe.clone();
        let root = match (target.pid, &target.root) {
            (Some(pid), root) => {
                let stat = procfs::stat(pid).with_context(|| format!("no process {pid}"))?;
                let _ = stat;
                for entry in procfs::environ(pid) {
                    if let Some((k, v)) = entry.value.split_once('=') {
                        env.insert(k.to_string(), v.to_string());
                    }
                }
                if exe.is_none() {
                    exe = procfs::exe(pid).map(|p| p.to_string_lossy().into_owned());
                }
                root.clone()
                    .unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/root")))
            }
            (None, Some(root)) => {
                if !root.is_dir() {
                    bail!("--root {}: not a directory", root.display());
                }
                root.clone()
            }
            (None, None) => {
                env.extend(std::env::vars());
                PathBuf::from("/")
            }
        };
        for kv in &target.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv:?}: expected K=V"))?;
            env.insert(k.to_string(), v.to_string());
        }
        Ok(Self {
            fs: RootFs::new(root),
            env,
            pid: target.pid,
            exe,
            facts: RefCell::default(),
        })
    }

    fn facts(&self, path: &str) -> Option<ElfFacts> {
        if let Some(known) = self.facts.borrow().get(path) {
            return known.clone();
        }
        // In the process's view, by the tracer's own block reader and budget.
        let parsed = fs::canonicalize(&self.fs, Path::new(path))
            .and_then(|real| self.fs.open(&real))
            .ok()
            .and_then(|file| crate::files::read_elf_file(file, true).ok())
            .map(|file| file.facts);
        self.facts
            .borrow_mut()
            .insert(path.to_string(), parsed.clone());
        parsed
    }

    fn cache(&self) -> Result<LdCache, String> {
        LdCache::load(&self.fs)
    }

    fn real(&self, path: &str) -> String {
        fs::canonicalize(&self.fs, Path::new(path))
            .map_or_else(|_| path.to_string(), |p| p.to_string_lossy().into_owned())
    }

    /// Mapped objects of the process: (path, SONAME).
    fn loaded(&self) -> Vec<(String, Option<String>)> {
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for m in procfs::maps(pid) {
            let path = m.path.to_string_lossy().into_owned();
            if !path.contains(".so") {
                continue;
            }
            if out.iter().all(|(p, _)| *p != path) {
                let soname = self.facts(&path).and_then(|f| f.soname);
                out.push((path, soname));
            }
        }
        out
    }

    /// `--ollama`, else the process itself if it is ollama, else `ollama` on its PATH or in
    /// the usual places.
    fn ollama(&self, explicit: Option<&str>) -> Option<Ollama> {
        let mut candidates: Vec<String> = explicit.map(str::to_string).into_iter().collect();
        if explicit.is_none() {
            candidates.extend(self.exe.clone().filter(|e| e.ends_with("/ollama")));
            let path = self.env.get("PATH").cloned().unwrap_or_default();
            candidates.extend(
                path.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| format!("{d}/ollama")),
            );
            candidates.extend(
                ["/usr/local/bin/ollama", "/usr/bin/ollama", "/bin/ollama"].map(String::from),
            );
        }
        let exe = candidates
            .into_iter()
            .find(|c| self.fs.kind(Path::new(c)).is_some())?;
        let exe = self.real(&exe);
        let bin = Path::new(&exe).parent()?.to_string_lossy().into_owned();
        let lib_dir = [format!("{bin}/../lib/ollama"), format!("{bin}/lib/ollama")]
            .into_iter()
            .map(|d| self.real(&d))
            .find(|d| self.fs.kind(Path::new(d)) == Some(fs::Kind::Dir))?;
        let gpu_dirs = self
            .fs
            .read_dir(Path::new(&lib_dir))
            .unwrap_or_default()
            .into_iter()
            .map(|n| format!("{lib_dir}/{n}"))
            .filter(|d| {
                self.fs
                    .kind(Path::new(&format!("{d}/libggml-cuda.so")))
                    .is_some()
            })
            .collect();
        Some(Ollama {
            exe,
            lib_dir,
            gpu_dirs,
        })
    }

    /// Shims from `--shim api=PATH`, else from the config file.
    fn shims(&self, flags: &[String], config: &Path) -> anyhow::Result<ShimSet> {
        let mut set = ShimSet::default();
        for shim in shims::declared(flags, config)? {
            if self.fs.kind(Path::new(&shim.path)).is_none() {
                set.missing.push(format!("{} ({})", shim.path, shim.source));
            } else {
                set.add(shim.api, &self.real(&shim.path), &shim.source);
            }
        }
        Ok(set)
    }
}

pub struct DoctorOptions {
    /// Only the kernel section (`--kernel`).
    pub kernel_only: bool,
    pub target: Target,
    pub shims: Vec<String>,
    pub shims_config: PathBuf,
    pub ollama: Option<String>,
    pub format: Format,
}

/// Exit 0 when every check passes, 1 when one fails; an unknown pid or root, a bad `--env`,
/// `--shim` or configuration file is bad input.
pub fn doctor(opts: DoctorOptions) -> anyhow::Result<i32> {
    if opts.kernel_only {
        // As root, the programs are loaded and attached, as a session would.
        let kernel = kernel::examine(kernel::Load::IfRoot);
        report::kernel(&kernel, opts.format)?;
        return Ok(if kernel.check().status == crate::doctor::Status::Pass {
            0
        } else {
            1
        });
    }
    let view = View::new(&opts.target).fail_as(Failure::Usage)?;
    let platform = crate::sysinfo::loader_platform();
    let shims = view
        .shims(&opts.shims, &opts.shims_config)
        .fail_as(Failure::Usage)?;
    let process = view.pid.map(|pid| ProcessView {
        pid,
        exe: view.exe.clone().unwrap_or_default(),
        loaded: view.loaded(),
    });
    let facts = |p: &str| view.facts(p);
    let setup = Setup {
        fs: &view.fs,
        platform: &platform,
        cache: view.cache(),
        conf_dirs: ldconf::directories(&view.fs, Path::new("/etc/ld.so.conf")),
        ld_library_path: view.env.get("LD_LIBRARY_PATH").cloned(),
        ld_preload: view.env.get("LD_PRELOAD").cloned(),
        preload_file: view
            .fs
            .read(Path::new("/etc/ld.so.preload"), 1 << 16)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        ollama: view.ollama(opts.ollama.as_deref()),
        process,
        shims,
        facts: &facts,
    };
    let ollama = setup.ollama.clone();
    let mut report = doctor::run(setup);
    // What the kernel offers, without loading anything (`--kernel` does).
    let kernel = kernel::examine(kernel::Load::No);
    report.checks.push(kernel.check());
    report::doctor(&report, ollama.as_ref(), Some(&kernel), opts.format)?;
    Ok(if report.passed() { 0 } else { 1 })
}

pub struct ResolveOptions {
    pub name: String,
    pub target: Target,
    pub shims: Vec<String>,
    pub shims_config: PathBuf,
    pub format: Format,
}

/// Exit 0 when the name resolves, 1 when it does not; bad input as for [`doctor`].
pub fn resolve(opts: ResolveOptions) -> anyhow::Result<i32> {
    let view = View::new(&opts.target).fail_as(Failure::Usage)?;
    let platform = crate::sysinfo::loader_platform();
    let shims = view
        .shims(&opts.shims, &opts.shims_config)
        .fail_as(Failure::Usage)?;
    let cache = view.cache().ok();
    let chain: Vec<Requester> = match &view.exe {
        Some(exe) => {
            let facts = view
                .facts(exe)
                .with_context(|| format!("{exe}: not a readable ELF file"))
                .fail_as(Failure::Usage)?;
            vec![Requester {
                path: exe.clone(),
                facts,
            }]
        }
        None => Vec::new(),
    };
    let ctx = Context {
        platform: Some(&platform),
        cache: cache.as_ref(),
        ld_library_path: view.env.get("LD_LIBRARY_PATH").cloned(),
        chain,
        loaded: view.loaded(),
        cwd: view
            .pid
            .and_then(|p| std::fs::read_link(format!("/proc/{p}/cwd")).ok())
            .map_or("/".into(), |p| p.to_string_lossy().into_owned()),
    };
    let resolution = ldso::resolve(&opts.name, &ctx, &view.fs);
    let class = resolution.winner().map(|w| {
        let real = view.real(&w.path);
        crate::loader::classify::classify_file(&real, view.facts(&real).as_ref(), &shims)
    });
    report::resolve(&resolution, class, opts.format)?;
    Ok(if resolution.winner().is_some() { 0 } else { 1 })
}
