//! One process's CUDA story, as the verdict reads it: the driver libraries it loaded (its
//! attempts), what each answered, the lookups that failed, NVML, and how the process ended.
use crate::model::{Class, Outcome};
use crate::model::{EventKind, ExitStatus, TraceEvent, file_name, signal_name};

use super::dlerror;

/// Which discovery library a file is, by class and name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Cuda,
    Nvml,
}

fn api_of(path: &str, class: Option<Class>) -> Option<Api> {
    let name = file_name(path);
    let nvml = name.contains("nvidia-ml") || name.contains("nvml");
    match class {
        Some(Class::Shim) if nvml => Some(Api::Nvml),
        Some(Class::Shim) if name.contains("cuda") && !name.contains("cudart") => Some(Api::Cuda),
        _ if name.starts_with("libnvidia-ml.so") => Some(Api::Nvml),
        _ if name.starts_with("libcuda.so") => Some(Api::Cuda),
        _ => None,
    }
}

/// A failed dlopen: the name asked for, dlerror's text, how many paths ld.so tried.
#[derive(Clone, Debug)]
struct Lookup {
    name: String,
    error: String,
    tried: usize,
}

/// A CUDA driver library a process loaded, and what came of it.
#[derive(Clone, Debug, Default)]
struct Attempt {
    /// Empty when the driver was loaded before tracing began.
    path: String,
    class: Option<Class>,
    /// The dlopen in flight when it was mapped (its own, or one whose DT_NEEDED it is).
    mapped_by: Option<String>,
    /// That dlopen failed after mapping it (ld.so unmapped it again): its name and dlerror.
    load_failed: Option<Lookup>,
    /// NVIDIA's driver, loaded while this (shim) attempt was under way.
    forwards_to: Option<String>,
    init: Option<String>,
    devices: Option<u64>,
    /// A driver call returned from it, failing or not.
    called: bool,
    /// The first failing driver call: `cuInit = CUDA_ERROR_NO_DEVICE (100)`.
    failed_call: Option<String>,
    /// A dlopen that could not bind to this driver.
    unbound: Option<Lookup>,
}

impl Attempt {
    fn shim(&self) -> bool {
        self.class == Some(Class::Shim)
    }
}

/// One process's CUDA story.
#[derive(Debug, Default)]
pub(super) struct Process {
    pub(super) label: String,
    /// The Ollama library dir it probes (`cuda_v13`), from its environment or argv: discovery
    /// tries each dir on its own, and one working dir is enough.
    pub(super) libdir: Option<String>,
    /// It called into a driver it loaded (an API call, or a dlsym of a driver function). One
    /// that only mapped the driver (a DT_NEEDED of MLX in `ollama serve`) took no part in
    /// discovery.
    called_driver: bool,
    /// The CUDA runtime it loaded (libcudart.so.N), and what the driver said its version was.
    runtime: Option<String>,
    driver_version: Option<u64>,
    /// When it last did anything CUDA-related (0: never).
    pub(super) last_cuda_ns: u64,
    attempts: Vec<Attempt>,
    /// A dlopen about CUDA that failed before any driver was loaded.
    lookup_failed: Option<Lookup>,
    /// CUDA libraries other than the driver (cudart, a backend) it loaded.
    cuda_related: Option<String>,
    pub(super) nvml: Option<(String, Option<Class>)>,
    /// The dlopen in flight when NVML was mapped.
    nvml_mapped_by: Option<String>,
    pub(super) nvml_failed: Option<String>,
    pub(super) nvml_initialised: bool,
    exit: Option<ExitStatus>,
}

/// The library dir an Ollama discovery child works on: the dir of `GGML_BACKEND_PATH` (era C+
/// llama-server), the last `--lib-dir` (gpu-discover), or the last `OLLAMA_LIBRARY_PATH` entry
/// (era B runners).
fn libdir(argv: &[crate::text::Text], env: &[crate::text::Text]) -> Option<String> {
    let base = |dir: &str| {
        let dir = dir.trim_end_matches('/');
        let name = file_name(dir);
        (!name.is_empty()).then(|| name.to_string())
    };
    let var = |key: &str| {
        env.iter()
            .find_map(|e| e.value.strip_prefix(key)?.strip_prefix('='))
    };
    if let Some(backend) = var("GGML_BACKEND_PATH") {
        return base(backend.rsplit_once('/').map_or("", |(dir, _)| dir));
    }
    let mut lib_dirs = argv
        .windows(2)
        .filter(|w| w[0].value == "--lib-dir")
        .map(|w| w[1].value.as_str());
    if let Some(dir) = lib_dirs.next_back() {
        return base(dir);
    }
    base(var("OLLAMA_LIBRARY_PATH")?.rsplit(':').next()?)
}

/// Driver API names are cu + an upper-case letter (cudart's are cuda*, cuBLAS's cublas*).
fn driver_symbol(name: &str) -> bool {
    name.len() > 2
        && name.starts_with("cu")
        && name[2..].starts_with(|c: char| c.is_ascii_uppercase())
}

fn label(comm: &str, argv: &[crate::text::Text]) -> String {
    match argv.get(1).map(|a| a.value.as_str()) {
        Some(sub) if !sub.starts_with('-') && !sub.contains('/') && sub.len() < 32 => {
            format!("{comm} {sub}")
        }
        _ => comm.to_string(),
    }
}

fn api_result(function: &str, result: &str, code: i32) -> String {
    format!("{function} = {result} ({code})")
}

/// The shim was mapped, then the dlopen that mapped it (its own, or one it is a DT_NEEDED of)
/// failed: dlerror's text, and what it means when it says.
fn load_failed(who: &str, shim: &str, failed: &Lookup) -> String {
    let Lookup { name, error, .. } = failed;
    let what = if name == file_name(shim) {
        format!("dlopen of the shim {shim}")
    } else {
        format!("dlopen({name}), which loaded the shim {shim},")
    };
    let why = dlerror::meaning(error, shim).map_or(String::new(), |m| format!("; {m}"));
    format!("{who}: {what} failed: {error}{why}")
}

impl Process {
    pub(super) fn new(comm: &str) -> Self {
        Self {
            label: comm.to_string(),
            ..Self::default()
        }
    }

    /// Whether anything it did can bear on the verdict.
    pub(super) fn has_story(&self) -> bool {
        self.last_cuda_ns > 0
            || self.lookup_failed.is_some()
            || self.cuda_related.is_some()
            || self.nvml.is_some()
            || self.nvml_failed.is_some()
    }

    pub(super) fn observe(&mut self, ev: &TraceEvent) {
        let p = self;
        match &ev.kind {
            EventKind::Exec { argv, env, .. } => {
                p.label = label(&ev.comm, argv);
                p.libdir = libdir(argv, env);
            }
            EventKind::Attached { argv, .. } => {
                p.label = label(&ev.comm, argv);
                p.libdir = libdir(argv, &[]);
            }
            EventKind::Call(c) if matches!(c.func.name(), "dlsym" | "dlvsym") => {
                if c.name.as_ref().is_some_and(|n| driver_symbol(&n.value)) {
                    p.called_driver = true;
                }
            }
            EventKind::Exit(status) => p.exit = Some(status.clone()),
            EventKind::Load(l) => {
                let during = l.during.as_ref().map(|d| d.value.as_str());
                p.loaded(ev.ts_ns, &l.path.value, l.class, during)
            }
            EventKind::Call(c) if matches!(c.func.name(), "dlopen" | "dlmopen") => {
                let name = c.name.as_ref().map_or("", |n| n.value.as_str());
                match (c.ok, &c.path) {
                    (Some(true), path) => {
                        if let Some(path) = path {
                            p.loaded(ev.ts_ns, &path.value, c.class, None);
                        }
                        p.dlopen_succeeded(name);
                    }
                    (Some(false), _) => {
                        let error = c.error.as_ref().map_or("", |e| e.value.as_str());
                        p.dlopen_failed(ev.ts_ns, name, error, c.probes.len());
                    }
                    _ => {}
                }
            }
            EventKind::Api(a) => {
                let failed = (!a.succeeded()).then(|| {
                    let what = match &a.text {
                        Some(t) => format!("{}({})", a.function, t.value),
                        None => a.function.clone(),
                    };
                    api_result(&what, &a.result, a.code)
                });
                if a.function.starts_with("nvml") {
                    if a.function.starts_with("nvmlInit") {
                        p.nvml_initialised |= a.succeeded();
                        if p.nvml_failed.is_none() {
                            p.nvml_failed = failed;
                        }
                    }
                    return;
                }
                p.last_cuda_ns = ev.ts_ns;
                p.called_driver = true;
                if a.function == "cuDriverGetVersion" && a.succeeded() {
                    p.driver_version = a.values.get("version").copied();
                }
                if p.attempts.is_empty() {
                    // The driver was mapped before tracing began (an attached process).
                    p.attempts.push(Attempt::default());
                }
                let Some(attempt) = p.attempts.last_mut() else {
                    return;
                };
                attempt.called = true;
                if a.function == "cuInit" {
                    attempt.init = Some(a.result.clone());
                }
                if a.function == "cuDeviceGetCount" && a.succeeded() {
                    attempt.devices = a.values.get("count").copied();
                }
                // A name the driver does not have is an answer, not a failure: callers
                // probe for optional entry points.
                if attempt.failed_call.is_none() && !a.function.starts_with("cuGetProcAddress") {
                    attempt.failed_call = failed;
                }
            }
            _ => {}
        }
    }

    fn loaded(&mut self, ts_ns: u64, path: &str, class: Option<Class>, during: Option<&str>) {
        match api_of(path, class) {
            Some(Api::Cuda) => {
                self.last_cuda_ns = ts_ns;
                // ld.so reports the same object once per mapping and per dlopen of it; one
                // whose load failed was unmapped, so this is a new mapping.
                if let Some(a) = self.attempts.last_mut().filter(|a| a.load_failed.is_none()) {
                    if a.path == path {
                        return;
                    }
                    if a.shim() && class != Some(Class::Shim) {
                        a.forwards_to.get_or_insert_with(|| path.to_string());
                        return;
                    }
                }
                self.attempts.push(Attempt {
                    path: path.to_string(),
                    class,
                    mapped_by: during.map(str::to_string),
                    ..Attempt::default()
                });
            }
            Some(Api::Nvml) if self.nvml.is_none() => {
                self.nvml = Some((path.to_string(), class));
                self.nvml_mapped_by = during.map(str::to_string);
            }
            Some(Api::Nvml) => {}
            None if file_name(path).contains("cuda") => {
                self.last_cuda_ns = self.last_cuda_ns.max(ts_ns);
                self.cuda_related.get_or_insert_with(|| path.to_string());
                if file_name(path).starts_with("libcudart.so.") {
                    self.runtime.get_or_insert_with(|| path.to_string());
                }
            }
            None => {}
        }
    }

    /// What the dlopen `name` mapped stays: a later failure of the same name is not its.
    fn dlopen_succeeded(&mut self, name: &str) {
        if let Some(a) = self.attempts.last_mut()
            && a.mapped_by.as_deref() == Some(name)
        {
            a.mapped_by = None;
        }
        if self.nvml_mapped_by.as_deref() == Some(name) {
            self.nvml_mapped_by = None;
        }
    }

    fn dlopen_failed(&mut self, ts_ns: u64, name: &str, error: &str, tried: usize) {
        // The dlopen that mapped NVML failed: NVML could not be initialised.
        if self.nvml_mapped_by.as_deref() == Some(name) && self.nvml_failed.is_none() {
            self.nvml_mapped_by = None;
            self.nvml_failed = Some(format!("dlopen({}) failed: {error}", file_name(name)));
            return;
        }
        let failure = Lookup {
            name: file_name(name).to_string(),
            error: error.to_string(),
            tried,
        };
        if let Some(a) = self.attempts.last_mut() {
            // A symbol another object wants from the driver is a binding failure; what the
            // driver itself wants (of its C library, its dependencies) fails its own load.
            let undefined_in = dlerror::undefined_symbol_in(error);
            let own = undefined_in.is_none_or(|o| file_name(o) == file_name(&a.path));
            if own && a.mapped_by.as_deref() == Some(name) && a.load_failed.is_none() && !a.called {
                self.last_cuda_ns = ts_ns;
                a.load_failed = Some(failure);
                return;
            }
            if undefined_in.is_some() && (name.contains("cuda") || error.contains("cuda")) {
                self.last_cuda_ns = ts_ns;
                a.unbound.get_or_insert(failure);
                return;
            }
        }
        if !name.contains("cuda") && !error.contains("cuda") {
            return;
        }
        self.last_cuda_ns = ts_ns;
        // The first failure, unless a later one names the driver itself.
        let names_driver =
            |l: &Lookup| l.error.contains("libcuda.so") || l.name.starts_with("libcuda.so");
        if self
            .lookup_failed
            .as_ref()
            .is_none_or(|old| !names_driver(old) && names_driver(&failure))
        {
            self.lookup_failed = Some(failure);
        }
    }

    /// Whether it took part in CUDA discovery, rather than only mapping a driver it never
    /// called (a library's DT_NEEDED, as MLX's in `ollama serve`).
    pub(super) fn took_part(&self) -> bool {
        self.last_cuda_ns > 0
            && (self.called_driver
                || self.attempts.is_empty()
                || self
                    .attempts
                    .iter()
                    .any(|a| a.unbound.is_some() || a.load_failed.is_some())
                || self.exit.as_ref().is_some_and(|e| e.signal.is_some()))
    }

    /// `libcudart.so.13` asked the driver its version and gave up: the runtime needs a newer
    /// driver than the one loaded reports (cudart's "driver version is insufficient").
    fn runtime_too_new(&self, a: &Attempt) -> Option<String> {
        let runtime = self.runtime.as_deref()?;
        let needs: u64 = file_name(runtime)
            .strip_prefix("libcudart.so.")?
            .split('.')
            .next()?
            .parse()
            .ok()?;
        let reported = self.driver_version?;
        (a.init.is_none() && reported < needs * 1000).then(|| {
            format!(
                "{} needs a CUDA {needs}.0 driver, and cuDriverGetVersion reports {}.{} ({reported})",
                file_name(runtime),
                reported / 1000,
                reported % 1000 / 10
            )
        })
    }

    pub(super) fn judge(&self, who: &str) -> (Outcome, String) {
        let Some(a) = self.attempts.last() else {
            return match &self.lookup_failed {
                Some(Lookup { name, error, tried }) => {
                    let error = if error.is_empty() {
                        format!("{tried} paths tried, none found")
                    } else {
                        error.clone()
                    };
                    (
                        Outcome::NotFound,
                        format!("{who}: dlopen({name}) failed: {error}"),
                    )
                }
                None => (
                    Outcome::NotFound,
                    format!(
                        "no CUDA driver library (libcuda.so*) was loaded; {who} loaded {} without one",
                        self.cuda_related.as_deref().unwrap_or("CUDA libraries")
                    ),
                ),
            };
        };
        let lib = match a.path.is_empty() {
            true => "a CUDA driver loaded before tracing began".to_string(),
            false => format!(
                "{} [{}]",
                a.path,
                a.class.map_or("unclassified", |c| c.name())
            ),
        };
        if let Some(Lookup { name, error, .. }) = &a.unbound {
            let symbol = error.rsplit("undefined symbol: ").next().unwrap_or(error);
            let blame = if driver_symbol(symbol) {
                format!(", which the CUDA driver it loaded, {lib}, does not export")
            } else {
                String::new()
            };
            return (
                Outcome::MissingSymbols,
                format!("{who}: dlopen({name}) failed: undefined symbol {symbol}{blame}"),
            );
        }
        if let Some(failed) = a.load_failed.as_ref().filter(|_| a.shim()) {
            return (Outcome::LoadFailed, load_failed(who, &a.path, failed));
        }
        let after = match (&a.load_failed, &a.failed_call, &a.init, a.devices) {
            (Some(failed), ..) => format!(", but its dlopen failed: {}", failed.error),
            (None, Some(call), _, _) => format!("; {call}"),
            (None, None, Some(init), Some(1)) => format!("; cuInit = {init}, 1 device"),
            (None, None, Some(init), Some(n)) => format!("; cuInit = {init}, {n} devices"),
            (None, None, Some(init), None) => format!("; cuInit = {init}"),
            (None, None, None, _) => String::new(),
        };
        if a.path.is_empty() {
            return (
                Outcome::OtherDriver,
                format!("{who} used {lib}, which the trace cannot classify{after}"),
            );
        }
        match a.class {
            Some(Class::Shim) => {}
            // A copy of NVIDIA's driver shipped inside Ollama's library dirs: removing that
            // copy, not reordering the path, is the fix.
            Some(Class::NvidiaDriver) if a.path.contains("/lib/ollama/") => {
                return (
                    Outcome::BundledCopy,
                    format!(
                        "{who} loaded {}, a copy of NVIDIA's driver inside Ollama's library dirs, not a shim{after}",
                        a.path
                    ),
                );
            }
            Some(Class::NvidiaDriver) => {
                return (
                    Outcome::NvidiaDriver,
                    format!("{who} loaded NVIDIA's driver {}, not a shim{after}", a.path),
                );
            }
            Some(Class::OllamaBundled | Class::CudaToolkit) => {
                return (
                    Outcome::BundledCopy,
                    format!("{who} loaded {lib} as the CUDA driver, not a shim{after}"),
                );
            }
            _ => {
                return (
                    Outcome::OtherDriver,
                    format!(
                        "{who} loaded {lib} as the CUDA driver, which is not a known shim (--shim or shims.toml names one){after}"
                    ),
                );
            }
        }
        let shim = match &a.forwards_to {
            Some(real) => format!("the shim {} (forwarding to {real})", a.path),
            None => format!("the shim {}", a.path),
        };
        if let Some(call) = &a.failed_call {
            return (
                Outcome::InitFailed,
                format!("{who} loaded {shim}, but {call}"),
            );
        }
        if let Some(why) = self.runtime_too_new(a) {
            return (
                Outcome::InitFailed,
                format!("{who} loaded {shim}, but {why}"),
            );
        }
        match (&a.init, a.devices) {
            (Some(_), Some(0)) => (
                Outcome::NoDevices,
                format!("{who} loaded {shim}; cuInit succeeded but cuDeviceGetCount = 0"),
            ),
            (Some(_), _) => (Outcome::ShimUsed, format!("{who} loaded {shim}{after}")),
            (None, _) => {
                // Exited on its own with no call: it was not stuck in one (a kill may have
                // cut a cuInit short whose return the trace never saw).
                if let Some(ExitStatus {
                    code: Some(code),
                    signal: None,
                    unseen: false,
                    ..
                }) = self.exit
                    && !a.called
                {
                    return (
                        Outcome::ShimUnused,
                        format!("{who} loaded {shim} but never called it; exited {code}"),
                    );
                }
                let ended = match &self.exit {
                    Some(ExitStatus {
                        signal: Some(sig), ..
                    }) => format!("was killed by {}", signal_name(*sig)),
                    Some(_) => "ended".to_string(),
                    None => "was still running when the trace ended".to_string(),
                };
                (
                    Outcome::Unfinished,
                    format!("{who} loaded {shim} but {ended} before cuInit returned"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::libdir;

    #[test]
    fn the_library_dir_comes_from_the_backend_path_lib_dirs_or_ollama_library_path() {
        let t = |v: &[&str]| v.iter().map(|s| (*s).into()).collect::<Vec<_>>();
        let env = t(&["GGML_BACKEND_PATH=/usr/lib/ollama/cuda_v13/libggml-cuda.so"]);
        assert_eq!(libdir(&[], &env).as_deref(), Some("cuda_v13"));
        let argv = t(&[
            "ollama",
            "gpu-discover",
            "--lib-dir",
            "/l/ollama",
            "--lib-dir",
            "/l/ollama/cuda_v12/",
        ]);
        assert_eq!(libdir(&argv, &[]).as_deref(), Some("cuda_v12"));
        let env = t(&["OLLAMA_LIBRARY_PATH=/l/ollama:/l/ollama/cuda_v12"]);
        assert_eq!(libdir(&[], &env).as_deref(), Some("cuda_v12"));
        assert_eq!(libdir(&t(&["ollama", "serve"]), &[]), None);
    }
}
