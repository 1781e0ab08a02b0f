//! The enricher's file and /proc reads, on threads of their own. Traced processes name the
//! files: a library on a hung mount, or anything else slow, delays the facts about it, never
//! the event loop. The loop waits for an answer a short while at most; once a wait runs out it
//! stops waiting until the readers answer again, and readers stuck for long are replaced.
//!
//! Two lanes: libraries are read the moment their load is drained, while the process (often
//! short-lived, its files in a scratch dir) is still there, so nothing slow may queue before
//! them; the resolution model and /proc/PID/maps checks, which ask ld.so and walk directories,
//! have a thread of their own.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use super::roots::Held;
use crate::loader::elf::ElfFacts;
use crate::loader::fs::{RootFs, canonicalize};
use crate::loader::ldcache::LdCache;
use crate::loader::ldso::{self, Context, Platform, Requester};

/// The longest the event loop waits for one answer.
const WAIT: Duration = Duration::from_millis(100);
/// A reader that has not answered for this long is abandoned for a new one.
const STUCK: Duration = Duration::from_secs(5);
/// Readers abandoned before reads are given up for the rest of the trace.
const MAX_READERS: u32 = 4;

pub enum Job {
    /// Where `path` leads in `pid`'s view (its root, held or while it lives, else the
    /// host's), and that file's dynamic-section facts.
    File {
        pid: u32,
        path: String,
        root: Option<Held>,
    },
    /// The resolution model's answer for DT_NEEDED `name` in `pid`'s context.
    Predict {
        id: u64,
        pid: u32,
        name: String,
        ld_library_path: Option<String>,
        chain: Vec<Requester>,
    },
    /// Which of `gained` /proc/PID/maps does not list (`None`: the process is gone).
    Maps {
        id: u64,
        pid: u32,
        gained: Vec<String>,
    },
}

/// Where a path led.
#[derive(Clone, Debug)]
pub enum Found {
    /// The real path, and its facts when the file could be read.
    File {
        real: String,
        facts: Option<Arc<ElfFacts>>,
    },
    /// Nowhere: the process and the file are gone, and the path was never read before.
    Gone,
}

/// The resolution model's search for a name.
#[derive(Debug, Default)]
pub struct Prediction {
    /// The file it ends at, if any.
    pub winner: Option<String>,
    /// What it tries before, and why each fails.
    pub tried: Vec<crate::model::Probe>,
}

pub enum Answer {
    Predicted(Prediction),
    Missing(Option<Vec<String>>),
}

pub enum Done {
    File {
        pid: u32,
        path: String,
        found: Found,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
}

/// The two lanes' inboxes.
struct Lanes {
    files: Sender<Job>,
    model: Sender<Job>,
}

/// The event loop's end of the readers.
pub struct Reader {
    lanes: Lanes,
    done: Receiver<Done>,
    next_id: u64,
    /// Since when a wait ran out with no answer since: no more waiting meanwhile.
    stalled: Option<Instant>,
    spawned: u32,
}

impl Reader {
    pub fn spawn() -> Self {
        let (lanes, done) = start();
        Self {
            lanes,
            done,
            next_id: 0,
            stalled: None,
            spawned: 1,
        }
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn send(&mut self, job: Job) {
        let lane = match job {
            Job::File { .. } => &self.lanes.files,
            Job::Predict { .. } | Job::Maps { .. } => &self.lanes.model,
        };
        // A reader that ended has nothing more to say; the fact stays unknown.
        let _ = lane.send(job);
    }

    /// An answer ready now.
    pub fn ready(&mut self) -> Option<Done> {
        match self.done.try_recv() {
            Ok(done) => {
                self.stalled = None;
                Some(done)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// The next answer, waiting up to `WAIT` unless the reader is stalled.
    pub fn next(&mut self) -> Option<Done> {
        if let Some(done) = self.ready() {
            return Some(done);
        }
        if let Some(since) = self.stalled {
            if since.elapsed() > STUCK && self.spawned < MAX_READERS {
                tracing::warn!("a file read has not returned for {STUCK:?}; reading on afresh");
                (self.lanes, self.done) = start();
                self.spawned += 1;
                self.stalled = None;
            }
            return None;
        }
        match self.done.recv_timeout(WAIT) {
            Ok(done) => Some(done),
            Err(RecvTimeoutError::Timeout) => {
                tracing::debug!("no answer from the file reader within {WAIT:?}");
                self.stalled = Some(Instant::now());
                None
            }
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }
}

fn start() -> (Lanes, Receiver<Done>) {
    let (outbox, done) = channel();
    let lane = |name: &str| {
        let (jobs, inbox) = channel();
        let outbox = outbox.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || Worker::default().serve(&inbox, &outbox));
        if let Err(e) = spawned {
            tracing::warn!("no {name} thread ({e}); file facts will be unknown");
        }
        jobs
    };
    let lanes = Lanes {
        files: lane("vgpu-files"),
        model: lane("vgpu-model"),
    };
    (lanes, done)
}

/// A lane's own state: what it read, by real path and by path as loaded (the files lane), the
/// loader's parameters and cache (the model lane).
#[derive(Default)]
struct Worker {
    read: HashMap<String, Arc<ElfFacts>>,
    /// Path as loaded → real path, for every file read: a later load of the same path whose
    /// process and file are both gone by now (a short-lived child, a scratch install) is taken
    /// to be the same file.
    by_path: HashMap<String, String>,
    platform: Option<Platform>,
    cache: Option<Option<LdCache>>,
}

impl Worker {
    fn serve(mut self, inbox: &Receiver<Job>, outbox: &Sender<Done>) {
        for job in inbox {
            let done = match job {
                Job::File { pid, path, root } => {
                    let found = self.file(pid, &path, root.as_ref());
                    Done::File { pid, path, found }
                }
                Job::Predict {
                    id,
                    pid,
                    name,
                    ld_library_path,
                    chain,
                } => Done::Answer {
                    id,
                    answer: Answer::Predicted(self.predict(pid, &name, ld_library_path, chain)),
                },
                Job::Maps { id, pid, gained } => Done::Answer {
                    id,
                    answer: Answer::Missing(maps_missing(pid, &gained)),
                },
            };
            if outbox.send(done).is_err() {
                return;
            }
        }
    }

    /// The process's root is tried first (held open for a container's or a chroot's), and
    /// a process that exits meanwhile falls back to the host's view, and a file gone from both
    /// to what the same path was earlier in the trace. A file that cannot be read is not
    /// remembered, so a later look may succeed.
    fn file(&mut self, pid: u32, path: &str, held: Option<&Held>) -> Found {
        let roots = held
            .map(|h| RootFs::new(h.path()))
            .into_iter()
            .chain([RootFs::new(format!("/proc/{pid}/root")), RootFs::host()]);
        let mut unread = None;
        for fs in roots {
            let Ok(real) = canonicalize(&fs, Path::new(path)) else {
                continue;
            };
            let real = real.to_string_lossy().into_owned();
            if let Some(facts) = self.read.get(&real) {
                self.by_path.insert(path.to_string(), real.clone());
                let facts = Some(Arc::clone(facts));
                return Found::File { real, facts };
            }
            // The dynamic section only: what classes and DT_NEEDED need.
            let facts = fs
                .open(Path::new(&real))
                .ok()
                .and_then(|f| crate::files::read_elf_file(f, false).ok());
            let Some(elf) = facts else {
                unread.get_or_insert(real);
                continue;
            };
            let facts = Arc::new(elf.facts);
            self.read.insert(real.clone(), Arc::clone(&facts));
            self.by_path.insert(path.to_string(), real.clone());
            return Found::File {
                real,
                facts: Some(facts),
            };
        }
        if let Some(real) = unread {
            return Found::File { real, facts: None };
        }
        match self.by_path.get(path) {
            Some(real) => Found::File {
                real: real.clone(),
                facts: self.read.get(real).cloned(),
            },
            None => Found::Gone,
        }
    }

    /// What the model says ld.so should load for `name`, in `pid`'s root while it lives.
    fn predict(
        &mut self,
        pid: u32,
        name: &str,
        ld_library_path: Option<String>,
        chain: Vec<Requester>,
    ) -> Prediction {
        let platform = self
            .platform
            .get_or_insert_with(crate::sysinfo::loader_platform)
            .clone();
        if self.cache.is_none() {
            let cache = LdCache::load(&RootFs::new(format!("/proc/{pid}/root")))
                .or_else(|_| LdCache::load(&RootFs::host()));
            self.cache = Some(cache.ok());
        }
        let ctx = Context {
            platform: Some(&platform),
            cache: self.cache.as_ref().and_then(Option::as_ref),
            ld_library_path,
            chain,
            loaded: Vec::new(),
            cwd: "/".into(),
        };
        let fs = if Path::new(&format!("/proc/{pid}/root/")).exists() {
            RootFs::new(format!("/proc/{pid}/root"))
        } else {
            RootFs::host()
        };
        let resolution = ldso::resolve(name, &ctx, &fs);
        let tried = resolution
            .candidates
            .iter()
            .filter_map(|c| {
                let error = match &c.verdict {
                    ldso::Verdict::Chosen => return None,
                    ldso::Verdict::Missing => "ENOENT".to_string(),
                    ldso::Verdict::Rejected(why) => why.clone(),
                };
                Some(crate::model::Probe {
                    path: c.path.as_str().into(),
                    error,
                })
            })
            .collect();
        Prediction {
            winner: resolution.winner().map(|w| w.path.clone()),
            tried,
        }
    }
}

/// Which of `gained` (paths in the process's view) /proc/PID/maps does not list; `None` when
/// the process is gone. Maps name real files, so each path is resolved in the process's root.
fn maps_missing(pid: u32, gained: &[String]) -> Option<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let fs = RootFs::new(format!("/proc/{pid}/root"));
    let real = |p: &str| {
        canonicalize(&fs, Path::new(p))
            .ok()
            .map(|r| r.to_string_lossy().into_owned())
    };
    not_in_maps(&maps, gained, real)
}

/// Which of `gained` the text of a maps file does not list, by path or by `real` path. An
/// exited process not yet reaped (a zombie) has no memory left and reads as empty: that is a
/// process gone, not one missing everything it loaded.
fn not_in_maps(
    maps: &str,
    gained: &[String],
    real: impl Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let mapped: std::collections::HashSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    if mapped.is_empty() {
        return None;
    }
    let missing = gained
        .iter()
        .filter(|p| {
            !mapped.contains(p.as_str()) && !real(p).is_some_and(|r| mapped.contains(r.as_str()))
        })
        .cloned()
        .collect();
    Some(missing)
}

#[cfg(test)]
mod tests {
    use super::not_in_maps;

    const MAPS: &str = "\
7f00-7f10 r-xp 00000000 08:01 42 /usr/lib/libnvidia-ml.so.580.159.04
7f20-7f30 rw-p 00000000 00:00 0
7ff0-7ff8 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn a_library_is_found_by_its_real_path() {
        let gained = vec![
            "/usr/lib/libnvidia-ml.so.1".to_string(),
            "/x/gone.so".into(),
        ];
        let real = |p: &str| p.replace(".so.1", ".so.580.159.04").into();
        assert_eq!(
            not_in_maps(MAPS, &gained, real),
            Some(vec!["/x/gone.so".to_string()])
        );
    }

    #[test]
    fn a_zombies_empty_maps_say_nothing() {
        let gained = vec!["/usr/lib/libnvidia-ml.so.1".to_string()];
        assert_eq!(not_in_maps("", &gained, |_| None), None);
    }
}
