//! The checks, in the order a shim author should read them.
use std::path::Path;

use super::{Check, Scan, Setup, Status};
use crate::doctor::surfaces::SURFACES;
use crate::loader::classify::{Api, classify_file};
use crate::loader::elf::Ident;
use crate::loader::ldso::{self, Context, Origin, Requester, Resolution, Verdict};
use crate::model::Class;

pub fn all(setup: &Setup, scan: &Scan) -> Vec<Check> {
    let targets = targets(setup);
    let resolutions: Vec<(String, Api, Resolution)> = targets
        .iter()
        .flat_map(|(label, ctx)| {
            [Api::Cuda, Api::Nvml].map(|api| {
                (
                    label.clone(),
                    api,
                    ldso::resolve(api.soname(), ctx, setup.fs),
                )
            })
        })
        .collect();
    vec![
        shims(setup),
        shim_files(setup),
        links(setup, scan),
        ld_cache(setup, scan),
        search_order(setup, &resolutions),
        shadowing(setup, &resolutions),
        symbols(setup),
        elf_class(scan),
        preload(setup),
    ]
}

fn class_of(setup: &Setup, path: &str) -> Class {
    let real = crate::loader::fs::canonicalize(setup.fs, Path::new(path))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_string());
    classify_file(&real, (setup.facts)(&real).as_ref(), &setup.shims)
}

fn requester(setup: &Setup, path: &str) -> Option<Requester> {
    Some(Requester {
        path: path.to_string(),
        facts: (setup.facts)(path)?,
    })
}

/// Whose search order is checked: the process (or this environment), and Ollama's runners.
fn targets<'a>(setup: &'a Setup) -> Vec<(String, Context<'a>)> {
    let base = Context {
        platform: Some(setup.platform),
        cache: setup.cache.as_ref().ok(),
        ld_library_path: setup.ld_library_path.clone(),
        cwd: "/".into(),
        ..Default::default()
    };
    let mut out = Vec::new();
    match &setup.process {
        Some(p) => out.push((
            format!("process {} ({})", p.pid, p.exe),
            Context {
                chain: requester(setup, &p.exe).into_iter().collect(),
                loaded: p.loaded.clone(),
                ..base.clone()
            },
        )),
        None if setup.ollama.is_none() => out.push(("this environment".into(), base.clone())),
        None => {}
    }
    if let Some(ollama) = &setup.ollama {
        for dir in &ollama.gpu_dirs {
            let mut path = vec![ollama.lib_dir.clone(), dir.clone()];
            path.extend(setup.ld_library_path.clone().filter(|p| !p.is_empty()));
            let backend = format!("{dir}/libggml-cuda.so");
            let chain = [requester(setup, &backend), requester(setup, &ollama.exe)]
                .into_iter()
                .flatten()
                .collect();
            let name = Path::new(dir)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((
                format!("Ollama runner loading {name}/libggml-cuda.so"),
                Context {
                    ld_library_path: Some(path.join(":")),
                    chain,
                    ..base.clone()
                },
            ));
        }
    }
    out
}

fn shims(setup: &Setup) -> Check {
    let found: Vec<String> = setup
        .shims
        .shims
        .iter()
        .map(|s| format!("{} shim {} ({})", s.api.name(), s.path, s.source))
        .collect();
    let missing: Vec<&str> = [Api::Cuda, Api::Nvml]
        .into_iter()
        .filter(|a| setup.shims.of(*a).next().is_none())
        .map(Api::soname)
        .collect();
    let fix = "install the shim (cargo xtask shims install --prefix DIR) or name it: --shim cuda=PATH, --shim nvml=PATH, or /etc/vgpu-trace/shims.toml";
    if !setup.shims.missing.is_empty() {
        return Check::new(
            "shims",
            Status::Fail,
            format!(
                "configured shims do not exist: {}",
                setup.shims.missing.join(", ")
            ),
        )
        .evidence(found)
        .fix("install the shims where the configuration says, or correct the configuration");
    }
    match missing.len() {
        0 => Check::new("shims", Status::Pass, "CUDA and NVML shims found").evidence(found),
        2 => Check::new("shims", Status::Fail, "no shim installed")
            .evidence(found)
            .fix(fix),
        _ => Check::new(
            "shims",
            Status::Fail,
            format!("no shim for {}", missing.join(", ")),
        )
        .evidence(found)
        .fix(fix),
    }
}

fn shim_files(setup: &Setup) -> Check {
    let mut evidence = Vec::new();
    let mut bad = Vec::new();
    for shim in &setup.shims.shims {
        let Some(facts) = (setup.facts)(&shim.path) else {
            bad.push(format!("{}: not a readable ELF shared object", shim.path));
            continue;
        };
        let soname = facts.soname.as_deref().unwrap_or("(none)");
        evidence.push(format!(
            "{}: SONAME {soname}, {}",
            shim.path,
            facts.ident.describe()
        ));
        if soname != shim.api.soname() {
            bad.push(format!(
                "{}: SONAME is {soname}, not {}",
                shim.path,
                shim.api.soname()
            ));
        }
        if let Some(why) = facts.ident.mismatch(&Ident::native()) {
            bad.push(format!("{}: {why} ({})", shim.path, facts.ident.describe()));
        }
    }
    if bad.is_empty() {
        Check::new(
            "shim-files",
            Status::Pass,
            "shim SONAMEs and ELF class are right",
        )
        .evidence(evidence)
    } else {
        Check::new("shim-files", Status::Fail, bad.join("; "))
            .evidence(evidence)
            .fix("link the CUDA shim with -Wl,-soname,libcuda.so.1 and the NVML shim with -Wl,-soname,libnvidia-ml.so.1, for x86-64")
    }
}

fn links(setup: &Setup, scan: &Scan) -> Check {
    let named: Vec<_> = scan.files.iter().filter(|f| f.is_nvidia_name()).collect();
    let evidence: Vec<String> = named
        .iter()
        .map(|f| match &f.real {
            Some(real) => format!("{} [{}]", f.chain(), class_of(setup, real).name()),
            None => f.chain(),
        })
        .collect();
    let broken: Vec<&str> = named
        .iter()
        .filter(|f| f.broken.is_some())
        .map(|f| f.path.as_str())
        .collect();
    // A soname link next to a shim that leads somewhere else: the link decides, not the shim.
    let misdirected: Vec<String> = named
        .iter()
        .filter_map(|f| {
            let name = Path::new(&f.path)
                .file_name()?
                .to_string_lossy()
                .into_owned();
            let api = Api::of_soname(&name)?;
            let dir = Path::new(&f.path).parent()?;
            let shim = setup
                .shims
                .of(api)
                .find(|s| Path::new(&s.path).parent() == Some(dir))?;
            let real = f.real.as_deref()?;
            (real != shim.path)
                .then(|| format!("{} leads to {real}, not to the shim {}", f.path, shim.path))
        })
        .collect();
    if !misdirected.is_empty() {
        return Check::new("links", Status::Fail, misdirected.join("; "))
            .evidence(evidence)
            .fix("point the soname link at the shim: ln -sf <shim file> libcuda.so.1 (libnvidia-ml.so.1 likewise)");
    }
    if broken.is_empty() {
        Check::new(
            "links",
            Status::Pass,
            format!(
                "{} libcuda/libnvidia-ml names in {} searched dirs, no broken link",
                named.len(),
                scan.dirs.len()
            ),
        )
        .evidence(evidence)
    } else {
        Check::new(
            "links",
            Status::Fail,
            format!("broken links: {}", broken.join(", ")),
        )
        .evidence(evidence)
        .fix("point each link at the shim file (ln -sf libvgpu-cuda.so libcuda.so.1) or remove it")
    }
}

fn ld_cache(setup: &Setup, scan: &Scan) -> Check {
    let cache = match &setup.cache {
        Ok(cache) => cache,
        Err(why) => {
            return Check::new(
                "ld-cache",
                Status::Warn,
                format!("ld.so.cache not read: {why}"),
            );
        }
    };
    let mut evidence = Vec::new();
    let mut stale = Vec::new();
    for e in cache
        .entries
        .iter()
        .filter(|e| Api::of_soname(&e.soname).is_some())
    {
        let exists = setup.fs.kind(Path::new(&e.path)).is_some()
            && crate::loader::fs::canonicalize(setup.fs, Path::new(&e.path)).is_ok();
        let class = if exists {
            class_of(setup, &e.path).name()
        } else {
            "missing"
        };
        evidence.push(format!("{} => {} [{class}]", e.soname, e.path));
        if !exists {
            stale.push(format!("{} => {} no longer exists", e.soname, e.path));
        }
    }
    // A shim in a configured dir that the cache does not list: ldconfig was not re-run.
    for file in &scan.files {
        let dir = Path::new(&file.path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (Some(real), Some(facts)) = (&file.real, &file.facts) else {
            continue;
        };
        let Some(soname) = facts
            .soname
            .as_deref()
            .filter(|s| Api::of_soname(s).is_some())
        else {
            continue;
        };
        if setup.conf_dirs.contains(&dir)
            && setup.shims.contains(real)
            && !cache
                .entries
                .iter()
                .any(|e| e.soname == soname && e.path.starts_with(&format!("{dir}/")))
        {
            stale.push(format!(
                "{} in {dir} (configured) is not in the cache",
                file.path
            ));
        }
    }
    if stale.is_empty() {
        Check::new("ld-cache", Status::Pass, "ld.so.cache matches the files").evidence(evidence)
    } else {
        Check::new(
            "ld-cache",
            Status::Fail,
            format!("ld.so.cache is stale: {}", stale.join("; ")),
        )
        .evidence(evidence)
        .fix("run ldconfig after installing, moving or removing libraries")
    }
}

fn describe(setup: &Setup, r: &Resolution) -> Vec<String> {
    r.candidates
        .iter()
        .map(|c| {
            let verdict = match &c.verdict {
                Verdict::Chosen => format!("LOADED [{}]", class_of(setup, &c.path).name()),
                Verdict::Missing => "no such file".into(),
                Verdict::Rejected(why) => format!("skipped: {why}"),
            };
            format!("  {} ({}): {verdict}", c.path, c.origin.describe())
        })
        .filter(|l| !l.ends_with("no such file") || l.contains("ld.so.cache"))
        .collect()
}

fn search_order(setup: &Setup, resolutions: &[(String, Api, Resolution)]) -> Check {
    let mut evidence = Vec::new();
    let mut failures = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    for (label, api, r) in resolutions {
        let winner = r.winner();
        let line = match winner {
            Some(w) => format!(
                "{label}: {} -> {} via {} [{}]",
                api.soname(),
                w.path,
                w.origin.describe(),
                class_of(setup, &w.path).name()
            ),
            None => format!("{label}: {} not found", api.soname()),
        };
        evidence.push(line.clone());
        evidence.extend(describe(setup, r));
        let Some(shim) = setup.shims.of(*api).next() else {
            continue;
        };
        if winner.is_some_and(|w| class_of(setup, &w.path) == Class::Shim) {
            continue;
        }
        failures.push(line);
        let dir = Path::new(&shim.path)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let searched = r
            .candidates
            .iter()
            .any(|c| Path::new(&c.path).parent() == Some(Path::new(&dir)));
        let fix = match winner {
            Some(w) => format!(
                "{} is found before the shim: put {dir} ahead of it, or remove it",
                w.path
            ),
            None if searched => format!(
                "{dir} is searched but has no {}: ln -s {} {dir}/{}",
                api.soname(),
                shim.path,
                api.soname()
            ),
            None => format!(
                "{dir} is not searched: add it to the service's LD_LIBRARY_PATH, or to /etc/ld.so.conf.d and run ldconfig"
            ),
        };
        if !fixes.contains(&fix) {
            fixes.push(fix);
        }
    }
    if failures.is_empty() {
        Check::new(
            "search-order",
            Status::Pass,
            "every searched name resolves to the shim (or no shim to compare with)",
        )
        .evidence(evidence)
    } else {
        Check::new("search-order", Status::Fail, failures.join("; "))
            .evidence(evidence)
            .fix(fixes.join("; "))
    }
}

fn shadowing(setup: &Setup, resolutions: &[(String, Api, Resolution)]) -> Check {
    let mut shadows = Vec::new();
    for (label, api, r) in resolutions {
        let Some(w) = r.winner() else { continue };
        let class = class_of(setup, &w.path);
        if matches!(
            class,
            Class::NvidiaDriver | Class::OllamaBundled | Class::CudaToolkit
        ) && setup.shims.of(*api).next().is_some()
        {
            let how = if w.origin == Origin::AlreadyLoaded {
                "already loaded".to_string()
            } else {
                w.origin.describe()
            };
            shadows.push(format!(
                "{label}: {} ({}, via {how}) wins over the shim",
                w.path,
                class.name()
            ));
        }
    }
    if shadows.is_empty() {
        Check::new(
            "shadowing",
            Status::Pass,
            "no NVIDIA, bundled or toolkit library wins over the shim",
        )
    } else {
        Check::new(
            "shadowing",
            Status::Fail,
            format!(
                "{} shadowing librar{}",
                shadows.len(),
                if shadows.len() == 1 { "y" } else { "ies" }
            ),
        )
        .evidence(shadows)
        .fix("remove or move the shadowing file, or put the shim's dir before it")
    }
}

fn symbols(setup: &Setup) -> Check {
    let mut evidence = Vec::new();
    let mut missing_any = Vec::new();
    let backend_imports: Vec<String> = setup
        .ollama
        .iter()
        .flat_map(|o| o.gpu_dirs.iter().map(|d| format!("{d}/libggml-cuda.so")))
        .filter_map(|p| Some((p.clone(), (setup.facts)(&p)?)))
        .flat_map(|(p, f)| {
            f.imports
                .into_iter()
                .filter(|s| s.starts_with("cu") && !s.starts_with("cuda"))
                .map(move |s| (p.clone(), s))
        })
        .map(|(_, s)| s)
        .collect();
    for shim in &setup.shims.shims {
        let Some(facts) = (setup.facts)(&shim.path) else {
            continue;
        };
        let mut surfaces: Vec<(String, Vec<&str>)> = SURFACES
            .iter()
            .filter(|s| s.api == shim.api)
            .map(|s| (s.consumer.to_string(), s.symbols.to_vec()))
            .collect();
        if shim.api == Api::Cuda && !backend_imports.is_empty() {
            surfaces.push((
                "this Ollama's libggml-cuda.so imports".into(),
                backend_imports.iter().map(String::as_str).collect(),
            ));
        }
        for (consumer, symbols) in surfaces {
            let missing: Vec<&str> = symbols
                .iter()
                .copied()
                .filter(|s| !facts.exports(s))
                .collect();
            if missing.is_empty() {
                evidence.push(format!(
                    "{}: all {} symbols {consumer} needs",
                    shim.path,
                    symbols.len()
                ));
            } else {
                missing_any.push(format!(
                    "{}: {consumer} needs {}",
                    shim.path,
                    missing.join(", ")
                ));
            }
        }
    }
    if missing_any.is_empty() {
        Check::new(
            "symbols",
            Status::Pass,
            "the shims export every discovery surface",
        )
        .evidence(evidence)
    } else {
        Check::new("symbols", Status::Fail, format!("missing symbols: {}", missing_any.join("; ")))
            .evidence(evidence)
            .fix("export the missing functions from the shim (libggml-cuda.so is loaded RTLD_NOW: one missing import fails the whole backend)")
    }
}

fn elf_class(scan: &Scan) -> Check {
    let wrong: Vec<String> = scan
        .files
        .iter()
        .filter_map(|f| {
            let facts = f.facts.as_ref()?;
            let why = facts.ident.mismatch(&Ident::native())?;
            Some(format!(
                "{} -> {}: {why} ({})",
                f.path,
                f.real.as_deref().unwrap_or("?"),
                facts.ident.describe()
            ))
        })
        .collect();
    if wrong.is_empty() {
        Check::new(
            "elf-class",
            Status::Pass,
            "every libcuda/libnvidia-ml found is x86-64",
        )
    } else {
        Check::new(
            "elf-class",
            Status::Warn,
            "libraries ld.so skips but Ollama's era-A globs would dlopen",
        )
        .evidence(wrong)
        .fix("remove 32-bit or foreign copies from the searched dirs")
    }
}

fn preload(setup: &Setup) -> Check {
    let mut entries: Vec<(String, &str)> = Vec::new();
    for line in setup.preload_file.as_deref().unwrap_or("").lines() {
        for e in line
            .split('#')
            .next()
            .unwrap_or("")
            .split([' ', ':', '\t'])
            .filter(|e| !e.is_empty())
        {
            entries.push((e.to_string(), "/etc/ld.so.preload"));
        }
    }
    for e in setup
        .ld_preload
        .as_deref()
        .unwrap_or("")
        .split([' ', ':'])
        .filter(|e| !e.is_empty())
    {
        entries.push((e.to_string(), "LD_PRELOAD"));
    }
    if entries.is_empty() {
        return Check::new("preload", Status::Pass, "nothing is preloaded");
    }
    let missing: Vec<String> = entries
        .iter()
        .filter(|(e, _)| setup.fs.kind(Path::new(e)).is_none())
        .map(|(e, _)| e.clone())
        .collect();
    let evidence = entries
        .iter()
        .map(|(e, from)| format!("{e} (from {from})"))
        .collect::<Vec<_>>();
    if missing.is_empty() {
        Check::new("preload", Status::Warn, "libraries are preloaded into every process; they run before discovery and can break it")
            .evidence(evidence)
            .fix("make sure the preloaded library tolerates Ollama's short discovery children")
    } else {
        Check::new(
            "preload",
            Status::Fail,
            format!("preloaded libraries do not exist: {}", missing.join(", ")),
        )
        .evidence(evidence)
        .fix("remove them from /etc/ld.so.preload or LD_PRELOAD")
    }
}
