//! Reading a JSON Lines record back: the header, the events, the summary. No root, no /proc:
//! the file alone. A record without its summary line (the tracer was killed) is incomplete,
//! not wrong; anything that is not a record is an error naming the line.
use std::io::{BufRead, Read as _};

use crate::judge::verdict::Judge;

use crate::model::{EventKind, FORMAT_VERSION, Header, Summary, TraceEvent, Verdict};
use crate::sink::Sink;

/// Whether `tag` names no event type of this version: the model's own answer (its `Later`).
fn later_type(tag: serde_json::Value) -> bool {
    matches!(
        serde_json::from_value(serde_json::json!({ "type": tag })),
        Ok(EventKind::Later)
    )
}

/// Lines longer than this are not a record vgpu-trace wrote.
const MAX_LINE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the record: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {why}")]
    Bad { line: usize, why: String },
    #[error("the record is empty")]
    Empty,
    #[error(
        "written by a newer vgpu-trace (format {found}; this one reads up to {FORMAT_VERSION})"
    )]
    Newer { found: u32 },
}

/// What a record held, for the caller to report.
pub struct Replayed {
    pub events: u64,
    /// The summary line, absent when the record was cut short.
    pub summary: Option<Summary>,
    /// Reached from the events, as the live run reached it (also for a cut record).
    pub verdict: Verdict,
}

fn bad(line: usize, why: impl std::fmt::Display) -> ReplayError {
    ReplayError::Bad {
        line,
        why: why.to_string(),
    }
}

/// Feeds a record to `sink`: header, events, and the summary if the record has one. What was
/// fed is flushed even when the record turns out bad further on.
/// A record to read: the file as written, or compressed with gzip (told by its first bytes, not
/// its name).
pub fn open(path: &std::path::Path) -> std::io::Result<Box<dyn BufRead>> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(match gzip {
        true => Box::new(std::io::BufReader::new(
            flate2::bufread::MultiGzDecoder::new(file),
        )),
        false => Box::new(file),
    })
}

pub fn replay(input: impl BufRead, sink: &mut dyn Sink) -> Result<Replayed, ReplayError> {
    let replayed = feed(input, sink);
    let flushed = sink.flush();
    let replayed = replayed?;
    flushed?;
    Ok(replayed)
}

fn feed(input: impl BufRead, sink: &mut dyn Sink) -> Result<Replayed, ReplayError> {
    let mut lines = input;
    let mut n = 0;
    let mut buf = Vec::new();
    let mut next_line = |buf: &mut Vec<u8>| -> Result<Option<usize>, ReplayError> {
        buf.clear();
        let read = (&mut lines).take(MAX_LINE + 1).read_until(b'\n', buf)?;
        if read == 0 {
            return Ok(None);
        }
        n += 1;
        if buf.len() as u64 > MAX_LINE {
            return Err(bad(n, "line longer than 16 MiB"));
        }
        Ok(Some(n))
    };
    let Some(first) = next_line(&mut buf)? else {
        return Err(ReplayError::Empty);
    };
    let value: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|e| bad(first, format!("not JSON: {e}")))?;
    if value.get("type").and_then(|t| t.as_str()) != Some("header") {
        return Err(bad(first, "not a vgpu-trace record (no header line)"));
    }
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found > FORMAT_VERSION {
        return Err(ReplayError::Newer { found });
    }
    let header: Header =
        serde_json::from_value(value).map_err(|e| bad(first, format!("bad header: {e}")))?;
    sink.header(&header)?;
    let mut events = 0;
    let mut summary: Option<Summary> = None;
    let mut judge = Judge::default();
    while let Some(line) = next_line(&mut buf)? {
        let text = std::str::from_utf8(&buf)
            .map_err(|e| bad(line, format!("not UTF-8: {e}")))?
            .trim_end();
        if text.is_empty() {
            continue;
        }
        if summary.is_some() {
            return Err(bad(line, "data after the summary line"));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(line, format!("not JSON: {e}")))?;
        if value.get("type").and_then(|t| t.as_str()) == Some("summary") {
            summary = Some(
                serde_json::from_value::<Summary>(value)
                    .map_err(|e| bad(line, format!("bad summary: {e}")))?,
            );
            continue;
        }
        // Event types added by a later minor version are skipped, as the format promises,
        // whatever fields they carry.
        let tag = value.get("type").cloned();
        let event: TraceEvent = match serde_json::from_value(value) {
            Ok(event) => event,
            Err(_) if tag.is_some_and(later_type) => continue,
            Err(e) => return Err(bad(line, format!("not an event: {e}"))),
        };
        if event.kind == EventKind::Later {
            continue;
        }
        judge.observe(&event);
        sink.event(&event)?;
        events += 1;
    }
    let verdict = judge.verdict();
    if let Some(s) = &mut summary {
        // Recomputed, so records from before verdicts existed get one too.
        s.verdict = Some(verdict.clone());
        sink.finish(s)?;
    }
    Ok(Replayed {
        events,
        summary,
        verdict,
    })
}

/// Every event of a record, for analysis (`diff`, `check`).
pub fn read_events(input: impl BufRead) -> Result<(Vec<TraceEvent>, Replayed), ReplayError> {
    struct Collect(Vec<TraceEvent>);
    impl Sink for Collect {
        fn header(&mut self, _: &Header) -> std::io::Result<()> {
            Ok(())
        }
        fn event(&mut self, event: &TraceEvent) -> std::io::Result<()> {
            self.0.push(event.clone());
            Ok(())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        fn finish(&mut self, _: &Summary) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Collect(Vec::new());
    let replayed = replay(input, &mut sink)?;
    Ok((sink.0, replayed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::JsonlSink;

    const HEADER: &str = r#"{"type":"header","format":"vgpu-trace","format_version":1,"tool_version":"0.1.0","kernel":"6.18","host":"vm","backend":"ebpf","mode":"run","target":["true"],"probed":[]}"#;
    const EVENT: &str =
        r#"{"ts_ns":1,"pid":2,"tid":2,"comm":"x","depth":0,"type":"spawn","child":3}"#;
    const SUMMARY: &str =
        r#"{"type":"summary","events":1,"processes":1,"calls":0,"lost":0,"undecodable":0}"#;

    fn run(text: &str) -> Result<(Replayed, String), ReplayError> {
        let mut out = Vec::new();
        let r = replay(text.as_bytes(), &mut JsonlSink::new(&mut out))?;
        Ok((r, String::from_utf8(out).unwrap()))
    }

    #[test]
    fn a_record_round_trips() {
        let text = format!("{HEADER}\n{EVENT}\n{SUMMARY}\n");
        let (r, out) = run(&text).unwrap();
        assert_eq!((r.events, r.summary.is_some()), (1, true));
        assert_eq!(out.lines().count(), 3);
    }

    #[test]
    fn a_gzipped_record_reads_as_the_record() {
        use std::io::Write as _;
        let text = format!("{HEADER}\n{EVENT}\n{SUMMARY}\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.vgt");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
        let mut out = Vec::new();
        let r = replay(open(&path).unwrap(), &mut JsonlSink::new(&mut out)).unwrap();
        assert_eq!((r.events, r.summary.is_some()), (1, true));
        // A cut archive is bad input, not a panic.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(replay(open(&path).unwrap(), &mut JsonlSink::new(&mut Vec::new())).is_err());
    }

    #[test]
    fn a_cut_record_is_incomplete_not_an_error() {
        let text = format!("{HEADER}\n{EVENT}\n");
        let (r, _) = run(&text).unwrap();
        assert!(r.summary.is_none());
        // Cut in the middle of a line: the bad line is named.
        let text = format!("{HEADER}\n{}", &EVENT[..20]);
        assert!(matches!(run(&text), Err(ReplayError::Bad { line: 2, .. })));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        assert!(matches!(run(""), Err(ReplayError::Empty)));
        assert!(matches!(
            run("garbage\n"),
            Err(ReplayError::Bad { line: 1, .. })
        ));
        assert!(matches!(
            run("{\"type\":\"event\"}\n"),
            Err(ReplayError::Bad { line: 1, .. })
        ));
        // A later version's new event type is skipped; a known type that does not parse is not.
        let later = format!("{HEADER}\n{{\"type\":\"verdict\",\"text\":\"x\"}}\n{SUMMARY}\n");
        assert_eq!(run(&later).unwrap().0.events, 0);
        let broken = format!("{HEADER}\n{{\"type\":\"call\"}}\n");
        assert!(matches!(
            run(&broken),
            Err(ReplayError::Bad { line: 2, .. })
        ));
        let newer = HEADER.replace("\"format_version\":1", "\"format_version\":99");
        assert!(matches!(run(&newer), Err(ReplayError::Newer { found: 99 })));
        let mut bytes = format!("{HEADER}\n").into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\n");
        let mut out = Vec::new();
        let r = replay(&bytes[..], &mut JsonlSink::new(&mut out));
        assert!(matches!(r, Err(ReplayError::Bad { line: 2, .. })));
        let after = format!("{HEADER}\n{SUMMARY}\n{EVENT}\n");
        assert!(matches!(run(&after), Err(ReplayError::Bad { line: 3, .. })));
    }
}
