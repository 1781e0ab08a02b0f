//! `attach --log FILE` and `--journal UNIT`: Ollama's log where it is not (only) what its
//! processes write to stdout and stderr, such as a service's log file or journal. Unlike the
//! kernel's view of the writes, these also hold what was logged before tracing began (the
//! conclusion of a discovery at start-up): the last MiB of a file, the last thousand journal
//! lines, then what is added.
use std::io::{BufRead as _, Read as _, Seek as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context as _;

use crate::failure::{FailAs as _, Failure};
use crate::judge::ollama_log;
use crate::model::{EventKind, Stream, TraceEvent};
use crate::procfs;

/// Where a log is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSource {
    File(PathBuf),
    Journal(String),
}

/// How much of a log file's past is read at start.
const HISTORY_BYTES: u64 = 1 << 20;
/// Journal lines read at start.
const HISTORY_LINES: &str = "1000";
/// How often a log file is looked at for new lines.
const POLL: Duration = Duration::from_millis(100);
/// A line longer than this is cut (a log line, not a file's whole content).
const LINE_MAX: usize = 16 << 10;

/// Lines from the sources, as they come.
pub struct Followers {
    rx: mpsc::Receiver<TraceEvent>,
    /// `journalctl` processes, ended with the session.
    children: Vec<std::process::Child>,
    /// Set when the session is done: the file readers end at their next look.
    done: Arc<AtomicBool>,
}

impl Drop for Followers {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where the output of `pids` lands, for a backend that does not see their writes (`attach`
/// under ptrace): a regular file their stdout or stderr is open on (as seen from their root),
/// else the journal of the systemd unit they run in, where their output goes to journald's
/// socket. A pipe or a terminal is left alone: reading it would take the lines from their
/// reader.
pub fn of_processes(pids: &[u32]) -> Vec<LogSource> {
    let mut sources = Vec::new();
    for &pid in pids {
        for fd in [2, 1] {
            let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
                continue;
            };
            let rooted = PathBuf::from(format!("/proc/{pid}/root"))
                .join(target.strip_prefix("/").unwrap_or(&target));
            if procfs::fd_is_file(pid, fd) && target.is_absolute() && rooted.exists() {
                let source = LogSource::File(rooted);
                if !sources.contains(&source) {
                    sources.push(source);
                }
            }
        }
        let to_socket = std::fs::read_link(format!("/proc/{pid}/fd/1"))
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let unit = super::cgroup::of_pid(pid)
            .and_then(|c| c.rsplit('/').next().map(str::to_string))
            .filter(|leaf| leaf.ends_with(".service"));
        if let Some(unit) = unit
            && to_socket
            && std::path::Path::new("/run/systemd/journal").exists()
        {
            let source = LogSource::Journal(unit);
            if !sources.contains(&source) {
                sources.push(source);
            }
        }
    }
    sources
}

impl Followers {
    /// Starts following every source; one that cannot be read is bad input.
    pub fn start(sources: &[LogSource]) -> anyhow::Result<Option<Self>> {
        Self::start_with(sources, true)
    }

    /// Follows only what is added from now on: the output of processes found where it lands
    /// (see [`of_processes`]), which, as writes would be, is traced from attach on; the file
    /// may hold anything before.
    pub fn start_from_now(sources: &[LogSource]) -> anyhow::Result<Option<Self>> {
        Self::start_with(sources, false)
    }

    fn start_with(sources: &[LogSource], history: bool) -> anyhow::Result<Option<Self>> {
        if sources.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let mut children = Vec::new();
        for source in sources {
            match source {
                LogSource::File(path) => {
                    follow_file(path.clone(), history, tx.clone(), done.clone())?
                }
                LogSource::Journal(unit) => {
                    children.push(follow_journal(unit, history, tx.clone())?)
                }
            }
        }
        Ok(Some(Self { rx, children, done }))
    }

    /// The lines read since the last call.
    pub fn take(&self) -> Vec<TraceEvent> {
        self.rx.try_iter().collect()
    }
}

fn follow_file(
    path: PathBuf,
    history: bool,
    tx: mpsc::Sender<TraceEvent>,
    done: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let file = crate::loader::fs::open_regular(&path, false)
        .with_context(|| format!("cannot read the log {}", path.display()))
        .fail_as(Failure::Usage)?;
    let name: Arc<str> = path
        .file_name()
        .map_or_else(|| "log".into(), |n| n.to_string_lossy().into());
    std::thread::Builder::new()
        .name("vgpu-log".into())
        .spawn(move || {
            let mut reader = std::io::BufReader::new(file);
            let len = reader.get_ref().metadata().map_or(0, |m| m.len());
            let mut pos = if history {
                len.saturating_sub(HISTORY_BYTES)
            } else {
                len
            };
            let _ = reader.seek(std::io::SeekFrom::Start(pos));
            // Started in the middle of a line: that line is not whole. (From the end, the next
            // line starts whole, but for one being written just then.)
            let mut skip_partial = history && pos > 0;
            use std::os::unix::fs::MetadataExt as _;
            let mut partial = Vec::new();
            loop {
                let mut chunk = Vec::new();
                let n = reader
                    .by_ref()
                    .take(1 << 20)
                    .read_to_end(&mut chunk)
                    .unwrap_or(0);
                pos += n as u64;
                partial.extend_from_slice(&chunk);
                while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    if std::mem::take(&mut skip_partial) {
                        continue;
                    }
                    if tx
                        .send(line_event(&name, Stream::File, &line[..end]))
                        .is_err()
                    {
                        return;
                    }
                }
                if partial.len() > LINE_MAX {
                    partial.clear();
                }
                if n > 0 {
                    continue;
                }
                std::thread::sleep(POLL);
                if done.load(Ordering::Relaxed) {
                    return;
                }
                // Rotated (a new file under the name) or truncated: read it from the start.
                let open = reader.get_ref().metadata().ok();
                let named = std::fs::metadata(&path).ok();
                let rotated =
                    named.is_some_and(|n| open.as_ref().is_none_or(|o| o.ino() != n.ino()));
                if rotated || open.is_some_and(|o| o.len() < pos) {
                    let Ok(file) = crate::loader::fs::open_regular(&path, false) else {
                        continue;
                    };
                    reader = std::io::BufReader::new(file);
                    pos = 0;
                    partial.clear();
                }
            }
        })
        .context("starting the log reader")?;
    Ok(())
}

fn follow_journal(
    unit: &str,
    history: bool,
    tx: mpsc::Sender<TraceEvent>,
) -> anyhow::Result<std::process::Child> {
    if unit.is_empty() || unit.starts_with('-') {
        return Err(anyhow::anyhow!("invalid unit name {unit:?}")).fail_as(Failure::Usage);
    }
    if !std::path::Path::new("/run/systemd/journal").exists() {
        return Err(anyhow::anyhow!(
            "journald is not running here: give the log file with --log"
        ))
        .fail_as(Failure::Usage);
    }
    let mut journalctl = std::process::Command::new("journalctl");
    journalctl.args([
        "--output=cat",
        "--follow",
        "--lines",
        if history { HISTORY_LINES } else { "0" },
        "--unit",
        unit,
    ]);
    follow_command(journalctl, format!("journal {unit}").into(), tx)
        .context("journald is not here (journalctl could not be run): give the log file with --log")
        .fail_as(Failure::Usage)
}

/// The lines `cmd` writes to its stdout, on a thread of their own, as `Stream::Journal` lines
/// named `name`.
fn follow_command(
    mut cmd: std::process::Command,
    name: Arc<str>,
    tx: mpsc::Sender<TraceEvent>,
) -> anyhow::Result<std::process::Child> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    std::thread::Builder::new()
        .name("vgpu-journal".into())
        .spawn(move || {
            let reader = std::io::BufReader::new(stdout);
            for line in reader.split(b'\n') {
                let Ok(mut line) = line else { return };
                line.truncate(LINE_MAX);
                if tx.send(line_event(&name, Stream::Journal, &line)).is_err() {
                    return;
                }
            }
        })?;
    Ok(child)
}

fn line_event(name: &Arc<str>, stream: Stream, bytes: &[u8]) -> TraceEvent {
    let line = ollama_log::log_line(stream, bytes, false);
    let ts_ns = ollama_log::parse_slog(&line.text.value)
        .and_then(|r| r.get("time").and_then(boottime_of))
        .unwrap_or_else(procfs::boottime_ns);
    TraceEvent {
        ts_ns,
        pid: 0,
        tid: 0,
        comm: Arc::clone(name),
        depth: 0,
        kind: EventKind::Log(line),
    }
}

/// A wall-clock time (RFC 3339: `2026-11-30T15:24:20.304Z`, `…+02:00`) on the trace's clock
/// (CLOCK_BOOTTIME).
fn boottime_of(time: &str) -> Option<u64> {
    let wall = rfc3339_ns(time)?;
    let now_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as i128;
    let now_boot = procfs::boottime_ns() as i128;
    u64::try_from(now_boot - (now_wall - wall as i128)).ok()
}

/// Nanoseconds since the epoch of an RFC 3339 time.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || s.get(10..11)? != "T" || s.get(13..14)? != ":" {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<9}", &frac[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest.get(4..6)?.parse::<i64>().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slog_times_read_as_the_clock_does() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ns("2026-11-30T15:24:20.304Z"),
            Some(1_796_052_260_304_000_000)
        );
        assert_eq!(
            rfc3339_ns("2026-11-30T17:24:20.304+02:00"),
            rfc3339_ns("2026-11-30T15:24:20.304Z")
        );
        assert_eq!(
            rfc3339_ns("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000_000_000)
        );
        assert_eq!(rfc3339_ns("yesterday"), None);
        assert_eq!(rfc3339_ns("2026-11-30 15:24:20Z"), None);
    }

    #[test]
    fn a_journal_reader_turns_its_output_into_lines() {
        let (tx, rx) = mpsc::channel();
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "printf 'time=2026-11-30T15:00:01.000Z level=INFO source=types.go:60 msg=\"inference compute\" library=cpu\\nplain\\n'",
        ]);
        let mut child = follow_command(cmd, Arc::from("journal ollama.service"), tx).unwrap();
        child.wait().unwrap();
        let lines: Vec<TraceEvent> = rx.iter().take(2).collect();
        let EventKind::Log(first) = &lines[0].kind else {
            panic!("{lines:?}")
        };
        assert_eq!(first.stream, Stream::Journal);
        assert!(matches!(
            first.ollama,
            Some(crate::model::OllamaSays::InferenceCompute { .. })
        ));
        assert_eq!(&*lines[1].comm, "journal ollama.service");
        let EventKind::Log(second) = &lines[1].kind else {
            panic!("{lines:?}")
        };
        assert_eq!(second.text.value, "plain");
    }

    #[test]
    fn a_rotated_log_is_read_from_its_new_start_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ollama.log");
        std::fs::write(&log, "before\n").unwrap();
        let followers = Followers::start(&[LogSource::File(log.clone())])
            .unwrap()
            .unwrap();
        let texts = |wait: Duration| {
            std::thread::sleep(wait);
            followers
                .take()
                .into_iter()
                .map(|ev| match ev.kind {
                    EventKind::Log(line) => line.text.value,
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(POLL * 3), ["before"]);
        std::fs::rename(&log, dir.path().join("ollama.log.1")).unwrap();
        std::fs::write(&log, "after\n").unwrap();
        // Several polls: the new file is read once, not again at each look.
        assert_eq!(texts(POLL * 6), ["after"]);
    }

    #[test]
    fn a_log_line_is_an_event_of_its_file() {
        let ev = line_event(
            &Arc::from("ollama.log"),
            Stream::File,
            br#"time=2026-11-30T15:24:20.304Z level=INFO source=types.go:42 msg="inference compute" library=CUDA"#,
        );
        let EventKind::Log(line) = &ev.kind else {
            panic!("{ev:?}")
        };
        assert_eq!(line.stream, Stream::File);
        assert!(line.ollama.is_some());
        assert_eq!(&*ev.comm, "ollama.log");
    }
}
