//! The live timeline for people: relative time, pid, name, tree indentation, colour on a
//! terminal. Every string from a traced process goes through `sanitize`.
use std::io::{self, Write};

use anstyle::Style;

use super::Sink;
use super::paint::*;
use crate::{
    model::{
        ApiCall, Call, EventKind, ExitStatus, Func, Header, Load, Probe, Summary, TraceEvent,
        dlopen_mode, signal_name,
    },
    sanitize::{plain, quoted, quoted_bytes},
    text::Text,
};

pub struct TimelineSink<W: Write> {
    out: W,
    color: bool,
    /// Timestamp that the relative times count from (the first event's).
    origin: Option<u64>,
}

/// Paints when colour is on.
struct Painter {
    on: bool,
}

impl Painter {
    fn paint(&self, style: Style, s: &str) -> String {
        paint(self.on, style, s)
    }
}

impl<W: Write> TimelineSink<W> {
    pub fn new(out: W, color: bool) -> Self {
        Self {
            out,
            color,
            origin: None,
        }
    }
}

fn text(t: &Text) -> String {
    let mut s = quoted_bytes(t.as_bytes());
    if t.truncated {
        s.push_str("…(truncated)");
    }
    if t.unreadable {
        s.push_str("…(unreadable)");
    }
    s
}

fn list(items: &[Text]) -> String {
    items.iter().map(text).collect::<Vec<_>>().join(" ")
}

fn call_line(c: &Call, st: &Painter) -> String {
    let name = c.name.as_ref().map_or_else(|| "NULL".to_string(), text);
    let args = match c.func {
        Func::Dlopen => format!("{name}, {}", dlopen_mode(c.mode.unwrap_or(0))),
        Func::Dlmopen => format!(
            "{:#x}, {name}, {}",
            c.handle.unwrap_or(0),
            dlopen_mode(c.mode.unwrap_or(0))
        ),
        Func::Dlsym => format!("{:#x}, {name}", c.handle.unwrap_or(0)),
        Func::Dlvsym => format!(
            "{:#x}, {name}, {}",
            c.handle.unwrap_or(0),
            c.version.as_ref().map_or_else(|| "NULL".into(), text)
        ),
        Func::Dlclose => format!("{:#x}", c.handle.unwrap_or(0)),
    };
    let result = match (c.ret, c.ok) {
        (None, _) => st.paint(PENDING, "<unfinished>"),
        (Some(r), Some(true)) => st.paint(
            OK,
            &if c.func == Func::Dlclose {
                r.to_string()
            } else {
                format!("{r:#x}")
            },
        ),
        (Some(r), _) => st.paint(
            ALARM,
            &if c.func == Func::Dlclose {
                (r as i32).to_string()
            } else {
                "NULL".into()
            },
        ),
    };
    let mut line = format!("{}({args}) = {result}", c.func.name());
    if let Some(path) = &c.path {
        let class = c
            .class
            .map_or(String::new(), |k| format!(" [{}]", k.name()));
        let shown = if c.name.as_ref().is_some_and(|n| n.value == path.value) {
            String::new()
        } else {
            format!(" {}", text(path))
        };
        if !shown.is_empty() || !class.is_empty() {
            line.push_str(&st.paint(NOTE, &format!(" →{shown}{class}")));
        }
    }
    if let Some(d) = c.duration_ns {
        line.push_str(&st.paint(DIM, &format!(" <{:.1} µs>", d as f64 / 1000.0)));
    }
    if c.gained.len() > 1 {
        line.push_str(&st.paint(DIM, &format!(" +{} objects", c.gained.len())));
    }
    if let Some(missing) = c.maps_missing.as_ref().filter(|m| !m.is_empty()) {
        let text = format!("not in /proc/PID/maps: {}", plain(&missing.join(", ")));
        line.push_str(&format!("  {}", st.paint(OLLAMA, &text)));
    }
    if let Some(w) = &c.warning {
        line.push_str(&format!(
            "  {}",
            st.paint(WARNING, &format!("⚠ {}", plain(w)))
        ));
    }
    if let Some(shim) = &c.forwarded_by {
        let text = format!("↪ the shim {} forwarding to it", plain(shim));
        line.push_str(&format!("  {}", st.paint(DIM, &text)));
    }
    if let Some(e) = &c.error {
        line.push_str(&format!(
            "  {}",
            st.paint(FAILED, &format!("dlerror: {}", text(e)))
        ));
    }
    if !c.probes.is_empty() {
        line.push_str(&st.paint(DIM, &format!("  tried: {}", probes(&c.probes))));
    }
    if !c.predicted_probes.is_empty() {
        let text = format!("  predicted: {}", probes(&c.predicted_probes));
        line.push_str(&st.paint(DIM, &text));
    }
    line
}

/// The last few attempts (the JSONL record keeps them all): the ones nearest the answer.
fn probes(list: &[Probe]) -> String {
    const SHOWN: usize = 4;
    let skipped = list.len().saturating_sub(SHOWN);
    let mut parts: Vec<String> = list[skipped..]
        .iter()
        .map(|p| format!("{} ({})", text(&p.path), plain(&p.error)))
        .collect();
    if skipped > 0 {
        parts.insert(0, format!("{skipped} earlier"));
    }
    parts.join(", ")
}

fn load_line(l: &Load, st: &Painter) -> String {
    let class = l
        .class
        .map_or(String::new(), |c| format!(" [{}]", c.name()));
    let mut line = format!("load {}{}", text(&l.path), st.paint(NOTE, &class));
    match (&l.needed_by, &l.during) {
        (Some(by), Some(d)) => line.push_str(&format!(
            " ← DT_NEEDED of {}, in dlopen({})",
            plain(by),
            text(d)
        )),
        (Some(by), None) => line.push_str(&format!(" ← DT_NEEDED of {}", plain(by))),
        (None, Some(d)) => line.push_str(&format!(" ← dlopen({})", text(d))),
        (None, None) => {}
    }
    if !l.probes.is_empty() {
        line.push_str(&st.paint(
            DIM,
            &format!("  after {} tried: {}", l.probes.len(), probes(&l.probes)),
        ));
    }
    // Seen in ld.so's list, not through its opens: what it tried is the model's word.
    if !l.predicted_probes.is_empty() {
        line.push_str(&st.paint(
            DIM,
            &format!(
                "  after {} predicted: {}",
                l.predicted_probes.len(),
                probes(&l.predicted_probes)
            ),
        ));
    }
    if let Some(p) = &l.predicted {
        line.push_str(&format!(
            "  {}",
            st.paint(OLLAMA, &format!("model predicted {}", plain(p)))
        ));
    }
    if let Some(w) = &l.warning {
        line.push_str(&format!(
            "  {}",
            st.paint(WARNING, &format!("⚠ {}", plain(w)))
        ));
    }
    if let Some(shim) = &l.forwarded_by {
        let text = format!("↪ the shim {} forwarding to it", plain(shim));
        line.push_str(&format!("  {}", st.paint(DIM, &text)));
    }
    line
}

fn api_line(c: &ApiCall, st: &Painter) -> String {
    let arg = c.text.as_ref().map_or(String::new(), text);
    let result = st.paint(if c.succeeded() { OK } else { ALARM }, &c.result);
    let mut line = format!("{}({arg}) = {result}", c.function);
    if c.code != 0 {
        line.push_str(&format!(" ({})", c.code));
    }
    for (k, v) in &c.values {
        // Function pointers read as addresses; everything else is a count, code or size.
        if k == "pfn" {
            line.push_str(&format!(" {k}={v:#x}"));
        } else {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

fn exit_line(s: &ExitStatus) -> String {
    match (s.code, s.signal) {
        _ if s.unseen => "gone (exit not observed)".into(),
        (Some(c), _) => format!("exit {c}"),
        (_, Some(sig)) => format!(
            "killed by {}{}",
            signal_name(sig),
            if s.core_dumped { " (core dumped)" } else { "" }
        ),
        _ => "exit (status unknown)".into(),
    }
}

/// One event as a line of text, without the trailing newline.
pub fn render(ev: &TraceEvent, origin: u64, color: bool) -> String {
    let st = Painter { on: color };
    let t = ev.ts_ns.saturating_sub(origin) as f64 / 1e9;
    let who = if ev.tid == ev.pid || ev.tid == 0 {
        format!("[{}]", ev.pid)
    } else {
        format!("[{}/{}]", ev.pid, ev.tid)
    };
    let indent = "  ".repeat(ev.depth.min(32) as usize);
    let what = match &ev.kind {
        EventKind::Attached {
            ppid,
            exe,
            argv,
            env,
            container,
        } => {
            let mut s = format!("attached (parent {ppid}) {}", list(argv));
            if let Some(id) = container {
                s.push_str(&format!(" (container {})", plain(id)));
            }
            if let Some(exe) = exe {
                s.push_str(&format!(" exe={}", text(exe)));
            }
            if !env.is_empty() {
                s.push_str(&format!(" env: {}", list(env)));
            }
            st.paint(BOLD, &s)
        }
        EventKind::Spawn { child } => format!("spawn → {child}"),
        EventKind::Load(load) => load_line(load, &st),
        EventKind::Api(call) => api_line(call, &st),
        EventKind::Exec {
            filename,
            argv,
            argv_more,
            env,
            container,
            ..
        } => {
            let mut s = format!("exec {} argv: {}", text(filename), list(argv));
            if let Some(id) = container {
                s.push_str(&format!(" (container {})", plain(id)));
            }
            if *argv_more {
                s.push_str(" …");
            }
            if !env.is_empty() {
                s.push_str(&format!(" env: {}", list(env)));
            }
            st.paint(BOLD, &s)
        }
        EventKind::ExecFailed {
            filename, error, ..
        } => st.paint(FAILED, &format!("exec {} failed: {error}", text(filename))),
        EventKind::Exit(s) => exit_line(s),
        EventKind::Call(c) => call_line(c, &st),
        EventKind::Lost { count } => st.paint(
            ALARM,
            &format!("!! {count} events lost (ring buffer full; raise --ring-size)"),
        ),
        EventKind::Later => "an event of a later format version".into(),
        EventKind::Log(line) => match &line.ollama {
            Some(says) => st.paint(OLLAMA, &format!("ollama: {}", plain(&says.summary()))),
            None => st.paint(
                DIM,
                &format!("{}: {}", line.stream.name(), text(&line.text)),
            ),
        },
    };
    format!(
        "{} {indent}{} {:<15} {what}",
        st.paint(DIM, &format!("{t:>10.6}")),
        st.paint(NOTE, &who),
        plain(&ev.comm)
    )
}

impl<W: Write> Sink for TimelineSink<W> {
    fn header(&mut self, h: &Header) -> io::Result<()> {
        let st = Painter { on: self.color };
        let how = match h.probed.is_empty() {
            true => format!("with {}", plain(&h.backend)),
            false => format!("probing dl* in {}", plain(&h.probed.join(", "))),
        };
        let line = format!(
            "vgpu-trace {} — {} {} on {} ({}), {how}",
            h.tool_version,
            h.mode,
            h.target
                .iter()
                .map(|s| quoted(s))
                .collect::<Vec<_>>()
                .join(" "),
            plain(&h.host),
            plain(&h.kernel),
        );
        let line = match h.shims.is_empty() {
            true => line,
            false => format!("{line}; shims: {}", plain(&h.shims.join(", "))),
        };
        writeln!(self.out, "{}", st.paint(DIM, &line))
    }

    fn event(&mut self, ev: &TraceEvent) -> io::Result<()> {
        // The process's own output reached the terminal already; what Ollama concluded is
        // worth a line of its own. The record keeps every line.
        if let EventKind::Log(line) = &ev.kind
            && line.ollama.is_none()
        {
            return Ok(());
        }
        let origin = *self.origin.get_or_insert(ev.ts_ns);
        writeln!(self.out, "{}", render(ev, origin, self.color))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self, s: &Summary) -> io::Result<()> {
        let st = Painter { on: self.color };
        if let Some(v) = &s.verdict {
            let colour = if v.outcome.shim_used() { GOOD } else { ALARM };
            let outcome = st.paint(colour, v.outcome.name());
            writeln!(self.out, "verdict: {outcome}: {}", plain(&v.text))?;
        }
        let mut line = format!(
            "{} events, {} processes, {} calls, {} lost",
            s.events, s.processes, s.calls, s.lost
        );
        if s.undecodable > 0 {
            line.push_str(&format!(", {} undecodable", s.undecodable));
        }
        let line = if s.lost > 0 {
            st.paint(ALARM, &line)
        } else {
            st.paint(DIM, &line)
        };
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_cannot_reach_the_terminal() {
        let ev = TraceEvent {
            ts_ns: 1_500_000_000,
            pid: 7,
            tid: 8,
            comm: "evil\x1b]0;x\x07".into(),
            depth: 1,
            kind: EventKind::Call(Call {
                name: Some("lib\x1b[2Jx.so".into()),
                mode: Some(1),
                ret: Some(0),
                ok: Some(false),
                duration_ns: Some(1500),
                error: Some("lib\x1b[2Jx.so: cannot open shared object file".into()),
                ..Call::new(Func::Dlopen)
            }),
        };
        let line = render(&ev, 1_000_000_000, false);
        assert!(!line.contains('\x1b'), "{line}");
        assert!(!line.contains('\x07'), "{line}");
        assert_eq!(
            line,
            "  0.500000   [7/8] evil\\x1b]0;x\\x07 dlopen(\"lib\\x1b[2Jx.so\", RTLD_LAZY) = NULL <1.5 µs>  \
             dlerror: \"lib\\x1b[2Jx.so: cannot open shared object file\""
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let ev = TraceEvent {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            comm: "a".into(),
            depth: 0,
            kind: EventKind::Spawn { child: 2 },
        };
        assert!(!render(&ev, 0, false).contains('\x1b'));
        assert!(render(&ev, 0, true).contains("\x1b[36m[1]"));
    }
}
