//! glibc's search for a library name, as `_dl_map_object` runs it, with every candidate kept
//! and explained: already-loaded objects by name or SONAME; a name with a slash as a path;
//! otherwise DT_RPATH of the loading object and of each object that loaded it (only while the
//! loading object has no DT_RUNPATH), LD_LIBRARY_PATH, the loading object's DT_RUNPATH,
//! ld.so.cache, then the default directories (the last two skipped under DF_1_NODEFLIB). Each
//! directory is tried with the loader's subdirectories first (glibc-hwcaps levels, and before
//! glibc 2.37 the legacy tls/platform ones). A file of the wrong class or machine is skipped.
use std::path::Path;

use super::elf::{ElfFacts, Ident};
use super::fs::Fs;
use super::ldcache::LdCache;
pub use super::platform::Platform;

/// An object whose dependencies or dlopen calls are being resolved.
#[derive(Clone, Debug)]
pub struct Requester {
    /// The path it was loaded from, as ld.so recorded it (its directory is `$ORIGIN`).
    pub path: String,
    pub facts: ElfFacts,
}

#[derive(Clone, Debug, Default)]
pub struct Context<'a> {
    pub platform: Option<&'a Platform>,
    pub cache: Option<&'a LdCache>,
    pub ld_library_path: Option<String>,
    /// The loading object first, then the object that loaded it, up to the executable.
    pub chain: Vec<Requester>,
    /// Objects already loaded: (path, SONAME).
    pub loaded: Vec<(String, Option<String>)>,
    /// The process's working directory, for relative names and empty path entries.
    pub cwd: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    AlreadyLoaded,
    /// The name contains a slash and is used as a path.
    Path,
    Rpath {
        object: String,
    },
    LdLibraryPath,
    Runpath {
        object: String,
    },
    Cache,
    Default,
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::AlreadyLoaded => "already loaded".into(),
            Origin::Path => "the name is a path".into(),
            Origin::Rpath { object } => format!("DT_RPATH of {object}"),
            Origin::LdLibraryPath => "LD_LIBRARY_PATH".into(),
            Origin::Runpath { object } => format!("DT_RUNPATH of {object}"),
            Origin::Cache => "ld.so.cache".into(),
            Origin::Default => "default directory".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// ld.so would take this file.
    Chosen,
    /// No such file (the probe fails with ENOENT).
    Missing,
    /// The file exists but cannot be loaded here (wrong class, machine, not ELF).
    Rejected(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub path: String,
    pub origin: Origin,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub name: String,
    /// Every candidate up to and including the winner, in ld.so's order.
    pub candidates: Vec<Candidate>,
}

impl Resolution {
    pub fn winner(&self) -> Option<&Candidate> {
        self.candidates
            .iter()
            .find(|c| c.verdict == Verdict::Chosen)
    }
}

struct Search<'a> {
    ctx: &'a Context<'a>,
    platform: Platform,
    fs: &'a dyn Fs,
    name: &'a str,
    out: Vec<Candidate>,
}

pub fn resolve(name: &str, ctx: &Context, fs: &dyn Fs) -> Resolution {
    let platform = ctx
        .platform
        .cloned()
        .unwrap_or_else(Platform::debian_x86_64);
    let mut search = Search {
        ctx,
        platform,
        fs,
        name,
        out: Vec::new(),
    };
    search.run();
    Resolution {
        name: name.to_string(),
        candidates: search.out,
    }
}

impl Search<'_> {
    fn run(&mut self) {
        if let Some((path, _)) = self
            .ctx
            .loaded
            .iter()
            .find(|(path, soname)| path == self.name || soname.as_deref() == Some(self.name))
        {
            self.out.push(Candidate {
                path: path.clone(),
                origin: Origin::AlreadyLoaded,
                verdict: Verdict::Chosen,
            });
            return;
        }
        let origin_of = |r: &Requester| parent(&r.path);
        let loader = self.ctx.chain.first();
        if self.name.contains('/') {
            let path = match loader {
                Some(r) => self.expand(self.name, &origin_of(r)),
                None => self.name.to_string(),
            };
            self.try_file(&self.absolute(&path), Origin::Path);
            return;
        }
        let has_runpath = loader.is_some_and(|r| !r.facts.runpath.is_empty());
        if !has_runpath {
            for object in &self.ctx.chain {
                for dir in &object.facts.rpath {
                    let dir = self.expand(dir, &origin_of(object));
                    if self.try_dir(
                        &dir,
                        Origin::Rpath {
                            object: object.path.clone(),
                        },
                    ) {
                        return;
                    }
                }
            }
        }
        if let Some(value) = self.ctx.ld_library_path.clone() {
            // $ORIGIN in LD_LIBRARY_PATH is the executable's directory.
            let exe_origin = self.ctx.chain.last().map(origin_of).unwrap_or_default();
            for dir in value.split([':', ';']) {
                let dir = self.expand(dir, &exe_origin);
                if self.try_dir(&dir, Origin::LdLibraryPath) {
                    return;
                }
            }
        }
        if let Some(object) = loader {
            for dir in &object.facts.runpath {
                let dir = self.expand(dir, &origin_of(object));
                if self.try_dir(
                    &dir,
                    Origin::Runpath {
                        object: object.path.clone(),
                    },
                ) {
                    return;
                }
            }
        }
        if loader.is_some_and(|r| r.facts.nodeflib) {
            return;
        }
        let cached = self
            .ctx
            .cache
            .and_then(|c| c.lookup(self.name, &self.platform.hwcaps));
        if let Some(entry) = cached
            && self.try_file(&entry.path.clone(), Origin::Cache)
        {
            return;
        }
        for dir in self.platform.system_dirs.clone() {
            if self.try_dir(&dir, Origin::Default) {
                return;
            }
        }
    }

    /// Tries `dir/<subdir>/name` for every subdirectory; true once one is chosen.
    fn try_dir(&mut self, dir: &str, origin: Origin) -> bool {
        let dir = self.absolute(if dir.is_empty() { "." } else { dir });
        for sub in self.platform.subdirs.clone() {
            let path = match sub.as_str() {
                "" => format!("{dir}/{}", self.name),
                sub => format!("{dir}/{sub}/{}", self.name),
            };
            if self.try_file(&path, origin.clone()) {
                return true;
            }
        }
        false
    }

    fn try_file(&mut self, path: &str, origin: Origin) -> bool {
        let verdict = match self.fs.read(Path::new(path), 64) {
            Err(_) => Verdict::Missing,
            Ok(head) => match Ident::parse(&head) {
                None => Verdict::Rejected("invalid ELF header".into()),
                Some(ident) => match ident.mismatch(&self.platform.ident) {
                    Some(why) => Verdict::Rejected(format!("{why} ({})", ident.describe())),
                    None => Verdict::Chosen,
                },
            },
        };
        let chosen = verdict == Verdict::Chosen;
        self.out.push(Candidate {
            path: path.to_string(),
            origin,
            verdict,
        });
        chosen
    }

    /// `$ORIGIN`, `$LIB`, `$PLATFORM` (also `${...}`) expanded.
    fn expand(&self, value: &str, origin: &str) -> String {
        let mut out = value.to_string();
        for (token, with) in [
            ("ORIGIN", origin),
            ("LIB", &self.platform.lib),
            ("PLATFORM", &self.platform.platform),
        ] {
            out = out
                .replace(&format!("${{{token}}}"), with)
                .replace(&format!("${token}"), with);
        }
        out
    }

    /// As ld.so spells it: relative to the working directory, trailing slashes dropped, and
    /// `.`/`..` kept (they show in the paths it probes and records).
    fn absolute(&self, path: &str) -> String {
        let joined = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.ctx.cwd.trim_end_matches('/'))
        };
        match joined.trim_end_matches('/') {
            "" => "/".into(),
            trimmed => trimmed.into(),
        }
    }
}

fn parent(path: &str) -> String {
    Path::new(path)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

#[cfg(test)]
mod tests;
