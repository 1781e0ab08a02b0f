//! The records directory: one record per pass that did not end on the shim, plus the last
//! that did, each written whole (a private temporary file, then a rename) and rotated by count
//! and total size. Files are named by the time their pass closed and its outcome
//! (`20261206T170102.123Z-init-failed.vgt`), so that `ls` lists them in order.
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::model::{Header, Summary, TraceEvent};
use crate::sink::{JsonlSink, Sink as _};

/// One record on disk.
#[derive(Clone, Debug)]
struct Kept {
    path: PathBuf,
    bytes: u64,
    healthy: bool,
}

pub struct Records {
    dir: PathBuf,
    keep: usize,
    max_bytes: u64,
    /// Oldest first.
    kept: Vec<Kept>,
}

impl Records {
    /// Opens (creating it 0700 if need be) `dir`, proving it writable, and takes in the
    /// records already there, from an earlier run.
    pub fn open(dir: &Path, keep: usize, max_bytes: u64) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the records directory {}", dir.display()))?;
        // Writable, and room for a small file: a read-only or full file system says so now.
        tempfile::Builder::new()
            .prefix(".vgpu-trace-probe")
            .tempfile_in(dir)
            .and_then(|mut f| f.write_all(b"{}\n").and_then(|()| f.as_file().sync_all()))
            .with_context(|| format!("cannot write in the records directory {}", dir.display()))?;
        let mut kept: Vec<Kept> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the records directory {}", dir.display()))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let outcome = outcome_of(&name)?;
                let meta = entry.metadata().ok().filter(|m| m.is_file())?;
                Some(Kept {
                    path: entry.path(),
                    bytes: meta.len(),
                    healthy: super::healthy(outcome),
                })
            })
            .collect();
        kept.sort_by(|a, b| a.path.cmp(&b.path));
        let mut records = Self {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            max_bytes,
            kept,
        };
        // Only the newest healthy one is kept.
        if let Some(newest) = records.kept.iter().rposition(|k| k.healthy) {
            records.remove_where(|i, k| k.healthy && i != newest);
        }
        records.rotate();
        Ok(records)
    }

    /// Records kept now.
    pub fn count(&self) -> usize {
        self.kept.len()
    }

    /// Writes one pass's record; returns its path. A failure (a full disk) leaves no partial
    /// file and every earlier record as it was.
    pub fn write(
        &mut self,
        unix_ms: u64,
        header: &Header,
        events: &[TraceEvent],
        summary: &Summary,
    ) -> io::Result<PathBuf> {
        let outcome = summary
            .verdict
            .as_ref()
            .map_or("no-cuda", |v| v.outcome.name());
        let file = tempfile::Builder::new()
            .prefix(".pass-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        let mut sink = JsonlSink::new(io::BufWriter::new(file));
        sink.header(header)?;
        for ev in events {
            sink.event(ev)?;
        }
        sink.finish(summary)?;
        let file = sink
            .into_inner()
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.as_file().sync_all()?;
        let bytes = file.as_file().metadata()?.len();
        let stamp = utc_stamp(unix_ms);
        let mut n = 0;
        let path = loop {
            let name = match n {
                0 => format!("{stamp}Z-{outcome}.vgt"),
                n => format!("{stamp}Z-{outcome}-{n}.vgt"),
            };
            let path = self.dir.join(name);
            if !path.exists() {
                break path;
            }
            n += 1;
        };
        file.persist_noclobber(&path).map_err(|e| e.error)?;
        let healthy = summary
            .verdict
            .as_ref()
            .is_some_and(|v| super::healthy(v.outcome));
        if healthy {
            // The last healthy record stands for every healthy pass before it.
            self.remove_where(|_, k| k.healthy);
        }
        self.kept.push(Kept {
            path: path.clone(),
            bytes,
            healthy,
        });
        self.rotate();
        Ok(path)
    }

    /// Removes the oldest records until at most `keep` remain and they take at most
    /// `max_bytes`; the newest record and the last healthy one are never removed.
    fn rotate(&mut self) {
        let last_healthy = self.kept.iter().rposition(|k| k.healthy);
        let newest = self.kept.len().saturating_sub(1);
        let mut total: u64 = self.kept.iter().map(|k| k.bytes).sum();
        let mut count = self.kept.len();
        let mut doomed = Vec::new();
        for (i, k) in self.kept.iter().enumerate() {
            if count <= self.keep && total <= self.max_bytes {
                break;
            }
            if i == newest || Some(i) == last_healthy {
                continue;
            }
            doomed.push(i);
            count -= 1;
            total -= k.bytes;
        }
        self.remove_where(|i, _| doomed.contains(&i));
    }

    fn remove_where(&mut self, doomed: impl Fn(usize, &Kept) -> bool) {
        let mut i = 0;
        self.kept.retain(|k| {
            let gone = doomed(i, k);
            i += 1;
            if gone && let Err(e) = std::fs::remove_file(&k.path) {
                tracing::warn!("cannot remove the old record {}: {e}", k.path.display());
            }
            !gone
        });
    }
}

/// The outcome in a record's file name, if the name is one of ours.
fn outcome_of(name: &str) -> Option<crate::model::Outcome> {
    let rest = name.strip_suffix(".vgt")?;
    let (stamp, outcome) = rest.split_once("Z-")?;
    if stamp.len() != 19 || stamp.as_bytes()[8] != b'T' {
        return None;
    }
    // A same-millisecond suffix (`-1`) is not part of the outcome.
    let outcome = match outcome.rsplit_once('-') {
        Some((o, n)) if n.bytes().all(|b| b.is_ascii_digit()) => o,
        _ => outcome,
    };
    crate::model::Outcome::parse(outcome)
}

/// `20261206T170102.123` for a time in unix milliseconds (UTC; the `Z` follows).
pub fn utc_stamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_times() {
        assert_eq!(utc_stamp(0), "19700101T000000.000");
        // 2026-12-06 17:01:02.123 UTC
        assert_eq!(utc_stamp(1_796_576_462_123), "20261206T170102.123");
        // A leap day.
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000.000");
    }

    fn summary(outcome: crate::model::Outcome) -> Summary {
        Summary {
            verdict: Some(crate::model::Verdict {
                outcome,
                pid: None,
                text: "x".into(),
            }),
            ..Summary::default()
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_keeps_the_newest_and_the_last_healthy_record() {
        use crate::model::Outcome::{InitFailed, NotFound, ShimUsed};
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let header = super::super::bare_header();
        let mut records = Records::open(dir.path(), 3, u64::MAX).unwrap();
        let mut ms = 1_796_576_462_000;
        for outcome in [
            ShimUsed, InitFailed, ShimUsed, NotFound, InitFailed, NotFound,
        ] {
            ms += 1000;
            let path = records.write(ms, &header, &[], &summary(outcome)).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            names(dir.path()),
            [
                "20261206T170105.000Z-shim-used.vgt",
                "20261206T170107.000Z-init-failed.vgt",
                "20261206T170108.000Z-not-found.vgt",
            ]
        );
        // A restart takes them in; a size limit then leaves the newest and the healthy one.
        let bytes = std::fs::metadata(dir.path().join("20261206T170108.000Z-not-found.vgt"))
            .unwrap()
            .len();
        let records = Records::open(dir.path(), 50, bytes * 2).unwrap();
        assert_eq!(records.count(), 2);
        assert_eq!(
            names(dir.path()),
            [
                "20261206T170105.000Z-shim-used.vgt",
                "20261206T170108.000Z-not-found.vgt",
            ]
        );
    }

    #[test]
    fn only_our_names_are_records() {
        assert_eq!(
            outcome_of("20261206T170102.123Z-init-failed.vgt"),
            Some(crate::model::Outcome::InitFailed)
        );
        assert_eq!(
            outcome_of("20261206T170102.123Z-shim-used-2.vgt"),
            Some(crate::model::Outcome::ShimUsed)
        );
        assert_eq!(outcome_of("20261206T170102.123Z-made-up.vgt"), None);
        assert_eq!(outcome_of("notes.vgt"), None);
        assert_eq!(outcome_of(".pass-abc.tmp"), None);
    }
}
