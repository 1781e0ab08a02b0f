//! The live view for a person at a terminal: one line per decision that matters (a process
//! starting and ending, each library discovery asked for with its outcome and class, each
//! CUDA/NVML result, what Ollama concluded, the verdict), indented by the process tree, cut to
//! the terminal's width. Long paths are shortened against the Ollama install and the shims'
//! directory, with a legend printed once; runs of alike lines (the CPU-variant probes, a
//! function asked for 400 times) fold into one. The full timeline is `-v`; the record keeps
//! everything either way.
use std::io::{self, Write};

use anstyle::Style;

use super::Sink;
use super::paint::*;
use crate::{
    model::{ApiCall, Call, EventKind, ExitStatus, Func, Header, Load, Summary, TraceEvent},
    sanitize::plain,
};

pub struct CompactSink<W: Write> {
    out: W,
    color: bool,
    width: usize,
    origin: Option<u64>,
    /// (prefix, name) pairs for shortening paths, longest prefix first; and which were shown.
    short: Vec<(String, String, bool)>,
    /// The last line, held back while the next ones may fold into it.
    pending: Option<Fold>,
}

/// A line that alike lines of the same process fold into.
struct Fold {
    ts_ns: u64,
    depth: u32,
    pid: u32,
    kind: FoldKind,
    count: u32,
    colour: Style,
}

enum FoldKind {
    /// Identical lines.
    Same(String),
    /// Successful dlopens of files of one class: `{dir}/{names}` `[class]`.
    Dlopen {
        dir: String,
        names: Vec<String>,
        class: String,
    },
    /// Calls of one function with one result, whatever their argument (cuGetProcAddress of
    /// each name in turn): `function(a, b, …) = result`.
    Api {
        function: String,
        args: Vec<String>,
        result: String,
        /// What the calls reported, while they all reported the same.
        values: Option<String>,
    },
}

impl<W: Write> CompactSink<W> {
    pub fn new(out: W, color: bool, width: usize) -> Self {
        Self {
            out,
            color,
            width: width.max(40),
            origin: None,
            short: Vec::new(),
            pending: None,
        }
    }

    fn paint(&self, style: Style, s: &str) -> String {
        paint(self.color, style, s)
    }

    /// A path with the longest known prefix replaced by its name; the legend for a name is
    /// written the first time it is used.
    fn shorten(&mut self, path: &str) -> (String, Option<String>) {
        for (prefix, name, shown) in &mut self.short {
            if let Some(rest) = path.strip_prefix(prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                let legend = (!*shown).then(|| format!("{name} = {}", plain(prefix)));
                *shown = true;
                return (format!("{name}{rest}"), legend);
            }
        }
        (path.to_string(), None)
    }

    /// A shim's directory, named once known.
    fn learn_shim(&mut self, path: &str) {
        if let Some((dir, _)) = path.rsplit_once('/')
            && !self.short.iter().any(|(_, n, _)| n == "$SHIMS")
        {
            self.learn(dir.to_string(), "$SHIMS");
        }
    }

    fn learn(&mut self, prefix: String, name: &str) {
        if prefix.len() > 1 && !self.short.iter().any(|(p, ..)| *p == prefix) {
            self.short.push((prefix, name.to_string(), false));
            self.short.sort_by_key(|(p, ..)| std::cmp::Reverse(p.len()));
        }
    }

    fn write_line(
        &mut self,
        ts_ns: u64,
        depth: u32,
        pid: u32,
        what: &str,
        colour: Style,
    ) -> io::Result<()> {
        let origin = *self.origin.get_or_insert(ts_ns);
        let t = ts_ns.saturating_sub(origin) as f64 / 1e9;
        let lead = format!("{t:>7.2} {}[{pid}] ", "  ".repeat(depth.min(16) as usize));
        let room = self.width.saturating_sub(lead.chars().count());
        let what = cut(what, room);
        let lead = self.paint(DIM, &lead);
        let what = self.paint(colour, &what);
        writeln!(self.out, "{lead}{what}")
    }

    fn emit(&mut self, fold: Fold) -> io::Result<()> {
        let text = match &fold.kind {
            FoldKind::Same(text) if fold.count > 1 => format!("{text}  ×{}", fold.count),
            FoldKind::Same(text) => text.clone(),
            FoldKind::Dlopen { dir, names, class } => {
                let names = match names.as_slice() {
                    // The same file again (libcudart and cuBLAS each dlopen the driver).
                    [one, rest @ ..] if rest.iter().all(|n| n == one) => one.clone(),
                    many => braces(many),
                };
                let count = if fold.count > 1 {
                    format!("  ×{}", fold.count)
                } else {
                    String::new()
                };
                format!("dlopen {dir}{names} [{class}]{count}")
            }
            FoldKind::Api {
                function,
                args,
                result,
                values,
            } => {
                let mut shown: Vec<&str> = Vec::new();
                for a in args.iter().filter(|a| !a.is_empty()) {
                    if !shown.contains(&a.as_str()) {
                        shown.push(a);
                    }
                }
                let more = if shown.len() > 3 { ", …" } else { "" };
                shown.truncate(3);
                let mut text = format!("{function}({}{more}) = {result}", shown.join(", "));
                if let Some(values) = values {
                    text.push_str(values);
                }
                if fold.count > 1 {
                    text.push_str(&format!("  ×{}", fold.count));
                }
                text
            }
        };
        self.write_line(fold.ts_ns, fold.depth, fold.pid, &text, fold.colour)
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some(fold) => self.emit(fold),
            None => Ok(()),
        }
    }

    /// Writes `fold`, or folds it into the line held back.
    fn push(&mut self, fold: Fold) -> io::Result<()> {
        if let Some(p) = &mut self.pending
            && p.pid == fold.pid
            && p.colour == fold.colour
        {
            match (&mut p.kind, &fold.kind) {
                (FoldKind::Same(a), FoldKind::Same(b)) if a == b => {
                    p.count += 1;
                    return Ok(());
                }
                (
                    FoldKind::Dlopen { dir, names, class },
                    FoldKind::Dlopen {
                        dir: d2,
                        names: n2,
                        class: c2,
                    },
                ) if dir == d2 && class == c2 && shape(&names[0]) == shape(&n2[0]) => {
                    names.extend(n2.iter().cloned());
                    p.count += 1;
                    return Ok(());
                }
                (
                    FoldKind::Api {
                        function,
                        args,
                        result,
                        values,
                    },
                    FoldKind::Api {
                        function: f2,
                        args: a2,
                        result: r2,
                        values: v2,
                    },
                ) if function == f2 && result == r2 => {
                    args.extend(a2.iter().cloned());
                    if values != v2 {
                        *values = None;
                    }
                    p.count += 1;
                    return Ok(());
                }
                _ => {}
            }
        }
        self.flush_pending()?;
        self.pending = Some(fold);
        Ok(())
    }

    fn line(&mut self, ev: &TraceEvent, kind: FoldKind, colour: Style) -> io::Result<()> {
        self.push(Fold {
            ts_ns: ev.ts_ns,
            depth: ev.depth,
            pid: ev.pid,
            kind,
            count: 1,
            colour,
        })
    }

    /// Writes a legend line, if shortening a path needed one.
    fn legend(&mut self, ev: &TraceEvent, legend: Option<String>) -> io::Result<()> {
        if let Some(legend) = legend {
            self.flush_pending()?;
            self.write_line(ev.ts_ns, ev.depth, ev.pid, &format!("({legend})"), DIM)?;
        }
        Ok(())
    }

    fn call(&mut self, ev: &TraceEvent, c: &Call) -> io::Result<()> {
        let name = c
            .name
            .as_ref()
            .map_or("NULL".to_string(), |n| plain(&n.value));
        let failed = c.ok == Some(false);
        match (c.func, failed) {
            // dlopen(NULL) asks for the program itself: no library.
            (Func::Dlopen | Func::Dlmopen, false) if c.name.is_none() => Ok(()),
            (Func::Dlopen | Func::Dlmopen, false) => {
                let path = c.path.as_ref().map_or(name.clone(), |p| plain(&p.value));
                if c.class == Some(crate::model::Class::Shim) {
                    self.learn_shim(&path);
                }
                let (short, legend) = self.shorten(&path);
                self.legend(ev, legend)?;
                let class = c.class.map_or("?", |c| c.name()).to_string();
                if let Some(w) = &c.warning {
                    let text = format!("dlopen {short} [{class}]  ⚠ {}", plain(w));
                    return self.line(ev, FoldKind::Same(text), WARNING);
                }
                if let Some(shim) = &c.forwarded_by {
                    let (shim, legend) = self.shorten(shim);
                    self.legend(ev, legend)?;
                    let text =
                        format!("dlopen {short} [{class}]  ↪ the shim {shim} forwarding to it");
                    return self.line(ev, FoldKind::Same(text), PLAIN);
                }
                let (dir, file) = short
                    .rsplit_once('/')
                    .map_or((String::new(), short.clone()), |(d, f)| {
                        (format!("{d}/"), f.to_string())
                    });
                self.line(
                    ev,
                    FoldKind::Dlopen {
                        dir,
                        names: vec![file],
                        class,
                    },
                    PLAIN,
                )
            }
            (Func::Dlopen | Func::Dlmopen | Func::Dlsym | Func::Dlvsym, true) => {
                let why = c
                    .error
                    .as_ref()
                    .map_or(c.failed_step.clone().unwrap_or_default(), |e| {
                        plain(&e.value)
                    });
                // dlerror names the file first: said once is enough.
                let file = crate::model::file_name(&name);
                let why = match why.split_once(": ") {
                    Some((head, rest)) if head.ends_with(file) => rest.to_string(),
                    _ => why,
                };
                let (name, legend) = self.shorten(&name);
                self.legend(ev, legend)?;
                if why.is_empty() {
                    // A lookup whose caller never asked dlerror why: a library probing for
                    // optional symbols, often dozens in a row, which fold into one line.
                    let kind = FoldKind::Api {
                        function: format!("✗ {}", c.func.name()),
                        args: vec![name],
                        result: "NULL".into(),
                        values: None,
                    };
                    return self.line(ev, kind, ALARM);
                }
                let (why, legend) = self.shorten_within(&why);
                self.legend(ev, legend)?;
                let text = format!("✗ {}({name}): {why}", c.func.name());
                self.line(ev, FoldKind::Same(text), ALARM)
            }
            _ => Ok(()),
        }
    }

    /// Shortens the first absolute path in `text` (an error message naming a file).
    fn shorten_within(&mut self, text: &str) -> (String, Option<String>) {
        let Some(start) = text.find('/') else {
            return (text.to_string(), None);
        };
        let end = text[start..]
            .find([':', ' ', ','])
            .map_or(text.len(), |e| start + e);
        let (short, legend) = self.shorten(&text[start..end]);
        (format!("{}{short}{}", &text[..start], &text[end..]), legend)
    }

    fn load(&mut self, ev: &TraceEvent, l: &Load) -> io::Result<()> {
        let driver = ["libcuda", "libnvidia-ml", "libcudart"]
            .iter()
            .any(|p| l.name.starts_with(p));
        // A dlopen's own file was shown with the dlopen.
        let own = l.during.as_ref().is_some_and(|d| d.value == l.path.value);
        if !(driver || l.warning.is_some()) || own {
            return Ok(());
        }
        if l.class == Some(crate::model::Class::Shim) {
            self.learn_shim(&l.path.value);
        }
        let (short, legend) = self.shorten(&plain(&l.path.value));
        self.legend(ev, legend)?;
        let class = l.class.map_or("?", |c| c.name());
        let mut text = format!("↳ {} = {short} [{class}]", plain(&l.name));
        if let Some(by) = &l.needed_by {
            text.push_str(&format!(
                " (needed by {})",
                plain(crate::model::file_name(by))
            ));
        }
        if let Some(shim) = &l.forwarded_by {
            let (shim, legend) = self.shorten(shim);
            self.legend(ev, legend)?;
            text.push_str(&format!("  ↪ the shim {shim} forwarding to it"));
        }
        let colour = match &l.warning {
            Some(w) => {
                text.push_str(&format!("  ⚠ {}", plain(w)));
                WARNING
            }
            None => PLAIN,
        };
        self.line(ev, FoldKind::Same(text), colour)
    }
}

/// `abc-{x,y,z}.so` from names that differ in one middle part.
fn braces(names: &[String]) -> String {
    let first = names[0].as_str();
    let prefix = names.iter().fold(first.len(), |n, s| {
        first
            .bytes()
            .zip(s.bytes())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    let suffix = names.iter().fold(first.len() - prefix, |n, s| {
        first
            .bytes()
            .rev()
            .zip(s.bytes().rev())
            .take(n.min(s.len() - prefix.min(s.len())))
            .take_while(|(a, b)| a == b)
            .count()
    });
    // Cut only between words: `{ivybridge,alderlake}.so`, not `{ivybridg,alderlak}e.so`.
    let separator = |b: u8| matches!(b, b'-' | b'_' | b'.' | b'/');
    let prefix = first.as_bytes()[..prefix]
        .iter()
        .rposition(|&b| separator(b))
        .map_or(0, |i| i + 1);
    let tail = first.len() - suffix;
    let suffix = first.as_bytes()[tail..]
        .iter()
        .position(|&b| separator(b))
        .map_or(0, |i| suffix - i);
    let middles: Vec<&str> = names
        .iter()
        .map(|s| &s[prefix.min(s.len())..s.len() - suffix.min(s.len() - prefix.min(s.len()))])
        .collect();
    format!(
        "{}{{{}}}{}",
        &first[..prefix],
        middles.join(","),
        &first[first.len() - suffix..]
    )
}

/// A file name with its variable middle cut out, to tell which names fold together:
/// `libggml-cpu-haswell.so` and `libggml-cpu-icelake.so` share `libggml-cpu-…so`.
fn shape(name: &str) -> String {
    let stem = name.rsplit_once('-').map_or(name, |(s, _)| s);
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    format!("{stem}-…{ext}")
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word stands
/// alone), the lines after the first indented.
fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line at least");
        let len = line.chars().count();
        if len > indent.len() && len + 1 + word.chars().count() > width {
            lines.push(format!("{indent}{word}"));
        } else {
            if !line.is_empty() && line != indent {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// `s` cut to `room` characters, with an ellipsis when cut.
fn cut(s: &str, room: usize) -> String {
    if s.chars().count() <= room {
        return s.to_string();
    }
    let mut out: String = s.chars().take(room.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn exit_text(s: &ExitStatus) -> (String, Style) {
    match (s.code, s.signal) {
        _ if s.unseen => ("■ gone (exit not observed)".into(), DIM),
        (Some(0), _) => ("■ exit 0".into(), PLAIN),
        (Some(c), _) => (format!("■ exit {c}"), ALARM),
        (_, Some(sig)) => (
            format!("■ killed by {}", crate::model::signal_name(sig)),
            ALARM,
        ),
        _ => ("■ exit (status unknown)".into(), PLAIN),
    }
}

/// ` count=1 version=13000`: what a call reported (addresses left out).
fn api_values(c: &ApiCall) -> String {
    c.values
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "pfn" | "table"))
        .map(|(k, v)| format!(" {k}={v}"))
        .collect()
}

impl<W: Write> Sink for CompactSink<W> {
    fn header(&mut self, h: &Header) -> io::Result<()> {
        for shim in &h.shims {
            // `cuda=/opt/vgpu/lib/libcuda.so.1 (--shim)`
            if let Some(path) = shim
                .split_once('=')
                .map(|(_, p)| p.split(" (").next().unwrap_or(p))
                && let Some((dir, _)) = path.rsplit_once('/')
            {
                self.learn(dir.to_string(), "$SHIMS");
            }
        }
        let line = format!(
            "vgpu-trace {} — {} {} ({} backend)",
            h.tool_version,
            h.mode,
            plain(&h.target.join(" ")),
            plain(&h.backend)
        );
        let line = cut(&line, self.width);
        writeln!(self.out, "{}", self.paint(BOLD, &line))
    }

    fn event(&mut self, ev: &TraceEvent) -> io::Result<()> {
        match &ev.kind {
            EventKind::Exec {
                filename,
                argv,
                container,
                ..
            } => {
                // An Ollama binary tells where its install is: `<prefix>/bin/ollama` next to
                // `<prefix>/lib/ollama`.
                if let Some(prefix) = filename.value.strip_suffix("/bin/ollama") {
                    self.learn(format!("{prefix}/lib/ollama"), "$OLLAMA");
                    self.learn(prefix.to_string(), "$PREFIX");
                }
                let mut words = Vec::new();
                let mut legends = Vec::new();
                for (i, a) in argv.iter().enumerate() {
                    let (w, legend) = if i == 0 || a.value.starts_with('/') {
                        self.shorten(&plain(&a.value))
                    } else {
                        (plain(&a.value), None)
                    };
                    words.push(w);
                    legends.extend(legend);
                }
                for legend in legends {
                    self.legend(ev, Some(legend))?;
                }
                let mut text = format!("▶ {}", words.join(" "));
                if let Some(id) = container {
                    text.push_str(&format!("  (container {})", plain(id)));
                }
                self.line(ev, FoldKind::Same(text), BOLD)
            }
            EventKind::Attached {
                argv, container, ..
            } => {
                let words: Vec<String> = argv.iter().map(|a| plain(&a.value)).collect();
                let mut text = format!("▶ {} (attached)", words.join(" "));
                if let Some(id) = container {
                    text.push_str(&format!("  (container {})", plain(id)));
                }
                self.line(ev, FoldKind::Same(text), BOLD)
            }
            EventKind::Exit(s) => {
                let (text, colour) = exit_text(s);
                self.line(ev, FoldKind::Same(text), colour)
            }
            EventKind::Call(c) => self.call(ev, c),
            EventKind::Load(l) => self.load(ev, l),
            EventKind::Api(c) => {
                let colour = if c.succeeded() { PLAIN } else { ALARM };
                let kind = FoldKind::Api {
                    function: c.function.clone(),
                    args: vec![c.text.as_ref().map_or(String::new(), |t| plain(&t.value))],
                    result: c.result.clone(),
                    values: Some(api_values(c)),
                };
                self.line(ev, kind, colour)
            }
            EventKind::Log(line) => match &line.ollama {
                Some(says) => {
                    let (text, legend) = self.shorten_within(&says.summary());
                    self.legend(ev, legend)?;
                    self.line(ev, FoldKind::Same(format!("ollama: {text}")), OLLAMA)
                }
                None => Ok(()),
            },
            EventKind::Lost { count } => self.line(
                ev,
                FoldKind::Same(format!("!! {count} events lost (raise --ring-size)")),
                ALARM,
            ),
            EventKind::Spawn { .. } | EventKind::ExecFailed { .. } | EventKind::Later => Ok(()),
        }
    }

    /// The line held back for folding goes out too: live, the session flushes after each
    /// batch, so lines fold within a batch and none waits for the next event to be seen.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()?;
        self.out.flush()
    }

    fn finish(&mut self, s: &Summary) -> io::Result<()> {
        self.flush_pending()?;
        if let Some(v) = &s.verdict {
            // The line that matters most: wrapped, not cut.
            let colour = if v.outcome.shim_used() { GOOD } else { ALARM };
            let text = format!("verdict: {}: {}", v.outcome.name(), plain(&v.text));
            for (i, line) in wrap(&text, self.width, "    ").iter().enumerate() {
                let line = match i {
                    0 => line.replacen(v.outcome.name(), &self.paint(colour, v.outcome.name()), 1),
                    _ => line.clone(),
                };
                writeln!(self.out, "{line}")?;
            }
        }
        writeln!(
            self.out,
            "{}",
            self.paint(
                DIM,
                &format!(
                    "{} events, {} processes, {} calls, {} lost (-v for every event)",
                    s.events, s.processes, s.calls, s.lost
                )
            )
        )?;
        self.out.flush()
    }
}

/// Only the verdict (`--quiet`).
pub struct VerdictSink<W: Write> {
    pub out: W,
}

impl<W: Write> Sink for VerdictSink<W> {
    fn header(&mut self, _: &Header) -> io::Result<()> {
        Ok(())
    }
    fn event(&mut self, _: &TraceEvent) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
    fn finish(&mut self, s: &Summary) -> io::Result<()> {
        if let Some(v) = &s.verdict {
            writeln!(
                self.out,
                "verdict: {}: {}",
                v.outcome.name(),
                plain(&v.text)
            )?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_in_the_middle_fold_into_braces() {
        let names: Vec<String> = [
            "libggml-cpu-haswell.so",
            "libggml-cpu-icelake.so",
            "libggml-cpu-x64.so",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(braces(&names), "libggml-cpu-{haswell,icelake,x64}.so");
        let names = ["libggml-cpu-ivybridge.so", "libggml-cpu-alderlake.so"].map(String::from);
        assert_eq!(braces(&names), "libggml-cpu-{ivybridge,alderlake}.so");
        let names = ["libggml-cpu-zen4.so", "libggml-cpu-zen5.so"].map(String::from);
        assert_eq!(braces(&names), "libggml-cpu-{zen4,zen5}.so");
        assert_eq!(shape("libggml-cpu-haswell.so"), shape("libggml-cpu-x64.so"));
        assert_ne!(shape("libggml-cpu-x64.so"), shape("libggml-cuda.so"));
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(
            wrap("verdict: shim-used: pid 1 loaded it", 16, "  "),
            ["verdict:", "  shim-used: pid", "  1 loaded it"]
        );
    }

    #[test]
    fn failed_lookups_nobody_asked_dlerror_about_fold_into_one_line() {
        let lookup = |name: &str, error: Option<&str>| TraceEvent {
            ts_ns: 1,
            pid: 7,
            tid: 7,
            comm: "x".into(),
            depth: 0,
            kind: EventKind::Call(
                serde_json::from_value(serde_json::json!({
                    "func": "dlsym", "name": name, "handle": 1, "ret": 0, "ok": false,
                    "error": error,
                }))
                .unwrap(),
            ),
        };
        let mut out = Vec::new();
        {
            let mut sink = CompactSink::new(&mut out, false, 120);
            for name in [
                "cuLinkCreate_v2",
                "cuLinkComplete",
                "cuModuleUnload",
                "cuLaunchKernel",
            ] {
                sink.event(&lookup(name, None)).unwrap();
            }
            sink.event(&lookup(
                "cuFoo",
                Some("/l/libx.so: undefined symbol: cuFoo"),
            ))
            .unwrap();
            sink.flush().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("✗ dlsym(cuLinkCreate_v2, cuLinkComplete, cuModuleUnload, …) = NULL  ×4"),
            "{text}"
        );
        assert!(
            text.contains("✗ dlsym(cuFoo): /l/libx.so: undefined symbol: cuFoo"),
            "{text}"
        );
    }

    #[test]
    fn a_line_held_for_folding_is_written_at_the_next_flush() {
        let mut out = Vec::new();
        {
            let mut sink = CompactSink::new(&mut out, false, 80);
            let ev = TraceEvent {
                ts_ns: 1,
                pid: 7,
                tid: 7,
                comm: "x".into(),
                depth: 0,
                kind: EventKind::Exit(ExitStatus {
                    code: Some(0),
                    ..ExitStatus::default()
                }),
            };
            sink.event(&ev).unwrap();
            sink.flush().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("[7] ■ exit 0"), "{text}");
    }
}
