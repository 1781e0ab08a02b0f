//! The bodies of the commands that read records (replay, check, diff): no tracing, no root.
use std::path::Path;

use anyhow::Context as _;

use crate::failure::{FailAs as _, Failure};
use crate::sink::Outputs;

/// A record's events; an unreadable or malformed file is bad input.
fn read_record(path: &Path) -> anyhow::Result<Vec<crate::model::TraceEvent>> {
    let file = crate::replay::open(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .fail_as(Failure::Usage)?;
    // ReplayError's message holds its source's already.
    let (events, replayed) = crate::replay::read_events(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        .fail_as(Failure::Usage)?;
    if replayed.summary.is_none() {
        eprintln!(
            "vgpu-trace: {} is incomplete (no summary line)",
            path.display()
        );
    }
    Ok(events)
}

/// Exit 0 when every rule holds, 1 when one does not.
pub fn check(file: &Path, expect: &Path) -> anyhow::Result<i32> {
    use crate::judge::expect::{Expectations, check, report};
    let rules = std::fs::read_to_string(expect)
        .with_context(|| format!("cannot read {}", expect.display()))
        .and_then(|t| {
            Expectations::parse(&t).map_err(|e| anyhow::anyhow!("{}: {e}", expect.display()))
        })
        .fail_as(Failure::Usage)?;
    let events = read_record(file)?;
    let failures = check(&events, &rules);
    let total = rules.expect.len() + rules.forbid.len();
    let text = format!(
        "{}{} of {total} expectations hold\n",
        report(&failures),
        total - failures.len()
    );
    print_escaped(&text);
    Ok(i32::from(!failures.is_empty()))
}

/// Exit 0 when nothing differs, 1 when something does.
pub fn diff(before: &Path, after: &Path) -> anyhow::Result<i32> {
    use crate::judge::diff;
    let (a, b) = (read_record(before)?, read_record(after)?);
    let changes = diff::diff(&diff::profile(&a), &diff::profile(&b));
    print_escaped(&diff::render(&changes));
    Ok(i32::from(!changes.is_empty()))
}

/// Writes a report to stdout, escaped line by line (names and paths come from traced
/// processes). A reader that went away (`| head`) ends the output, not the program.
fn print_escaped(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for line in text.lines() {
        if writeln!(out, "{}", crate::sanitize::plain(line)).is_err() {
            return;
        }
    }
}

/// Exit 0 for a complete record, 0 with a warning for one cut short; a bad file is bad input.
/// `outputs`: the timeline's format, colour and view, and a Perfetto trace if asked for.
pub fn replay(file: &Path, outputs: &Outputs) -> anyhow::Result<i32> {
    let input = crate::replay::open(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .fail_as(Failure::Usage)?;
    let mut sink = outputs.open()?;
    match crate::replay::replay(input, sink.as_mut()) {
        Ok(r) if r.summary.is_none() => {
            eprintln!(
                "vgpu-trace: {} is incomplete: {} events and no summary line (the tracer was stopped before it finished)",
                file.display(),
                r.events
            );
            Ok(0)
        }
        Ok(_) => Ok(0),
        Err(crate::replay::ReplayError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(0)
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", file.display())).fail_as(Failure::Usage),
    }
}
