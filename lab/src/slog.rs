//! Log lines in the shape Go's `slog.TextHandler` gives them in `ollama serve`:
//! `time=2025-10-01T12:00:00.000Z level=INFO source=runner.go:67 msg="..." key=value`.
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Ollama's own level below DEBUG, shown with OLLAMA_DEBUG=2.
    Trace,
    Debug,
    Info,
    Warn,
}

/// OLLAMA_DEBUG=1 shows DEBUG lines, OLLAMA_DEBUG=2 TRACE lines too; unset shows INFO and above.
pub fn enabled(level: Level) -> bool {
    let value = std::env::var("OLLAMA_DEBUG").unwrap_or_default();
    let debug = !value.is_empty() && value != "0" && value != "false";
    match level {
        Level::Trace => value.parse::<i32>().is_ok_and(|n| n >= 2),
        Level::Debug => debug,
        Level::Info | Level::Warn => true,
    }
}

pub fn log(level: Level, source: &str, msg: &str, attrs: &[(&str, String)]) {
    if enabled(level) {
        eprintln!(
            "{}",
            format_line(SystemTime::now(), level, source, msg, attrs)
        );
    }
}

pub fn format_line(
    now: SystemTime,
    level: Level,
    source: &str,
    msg: &str,
    attrs: &[(&str, String)],
) -> String {
    let level = match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
    };
    let mut line = format!(
        "time={} level={level} source={source} msg={}",
        rfc3339(now),
        quote(msg)
    );
    for (key, value) in attrs {
        let _ = write!(line, " {key}={}", quote(value));
    }
    line
}

/// slog quotes empty values and values with spaces, quotes or '='.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

fn rfc3339(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Go's `format.HumanBytes2`: binary units with one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    if value < 1024.0 {
        return format!("{bytes} B");
    }
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_look_like_slog() {
        let t = UNIX_EPOCH + Duration::from_millis(1_759_320_000_123);
        let line = format_line(
            t,
            Level::Info,
            "runner.go:67",
            "discovering available GPUs...",
            &[
                ("cmd", "/usr/bin/ollama runner --port 1".into()),
                ("compute", String::new()),
                ("library", "cuda".into()),
            ],
        );
        assert_eq!(
            line,
            "time=2025-10-01T12:00:00.123Z level=INFO source=runner.go:67 \
             msg=\"discovering available GPUs...\" cmd=\"/usr/bin/ollama runner --port 1\" \
             compute=\"\" library=cuda"
        );
    }

    #[test]
    fn human_bytes_matches_go() {
        assert_eq!(human_bytes(80 << 30), "80.0 GiB");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }
}
