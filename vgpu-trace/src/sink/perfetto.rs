//! Chrome trace JSON (the "JSON array format"), which ui.perfetto.dev and chrome://tracing
//! open: one track per process (named by its command), a span per dl*/API call, an instant per
//! load, exec and exit. Written as events arrive, so a cut trace still opens.
use std::io::{self, Write};

use serde_json::{Value, json};

use super::Sink;
use crate::model::{EventKind, Header, Summary, TraceEvent};

pub struct PerfettoSink<W: Write> {
    out: W,
    first: bool,
    /// The latest timestamp seen, where the verdict is placed.
    last_ns: u64,
}

impl<W: Write> PerfettoSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            first: true,
            last_ns: 0,
        }
    }

    fn write(&mut self, v: &Value) -> io::Result<()> {
        let sep = if self.first { "[\n" } else { ",\n" };
        self.first = false;
        self.out.write_all(sep.as_bytes())?;
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::other)
    }
}

/// Microseconds, as the format counts.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The trace events one timeline event becomes.
pub fn trace_events(ev: &TraceEvent) -> Vec<Value> {
    let (pid, tid, ts) = (ev.pid, ev.tid, us(ev.ts_ns));
    let instant = |name: String, args: Value| json!({"ph": "i", "s": "t", "name": name, "pid": pid, "tid": tid, "ts": ts, "args": args});
    match &ev.kind {
        EventKind::Exec { filename, argv, .. } => vec![
            json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": format!("{} [{pid}]", ev.comm)}}),
            instant(
                format!("exec {}", filename.value),
                json!({"argv": argv.iter().map(|a| a.value.clone()).collect::<Vec<_>>()}),
            ),
        ],
        EventKind::Attached { .. } => {
            vec![
                json!({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": format!("{} [{pid}]", ev.comm)}}),
            ]
        }
        EventKind::Spawn { child } => vec![instant(format!("spawn {child}"), json!({}))],
        EventKind::Exit(status) => vec![instant(
            "exit".into(),
            serde_json::to_value(status).unwrap_or_default(),
        )],
        EventKind::Call(call) => {
            let name = format!(
                "{}({})",
                call.func.name(),
                call.name.as_ref().map_or("NULL", |n| n.value.as_str())
            );
            let args = serde_json::to_value(call).unwrap_or_default();
            vec![
                json!({"ph": "X", "name": name, "cat": "dl", "pid": pid, "tid": tid, "ts": ts, "dur": us(call.duration_ns.unwrap_or(0)), "args": args}),
            ]
        }
        EventKind::Api(call) => {
            let args = serde_json::to_value(call).unwrap_or_default();
            vec![
                json!({"ph": "X", "name": format!("{} = {}", call.function, call.result), "cat": "api", "pid": pid, "tid": tid, "ts": ts, "dur": 0, "args": args}),
            ]
        }
        EventKind::Load(load) => vec![instant(
            format!("load {}", load.name),
            serde_json::to_value(load).unwrap_or_default(),
        )],
        EventKind::ExecFailed {
            filename, error, ..
        } => vec![instant(
            format!("exec failed {}: {error}", filename.value),
            json!({}),
        )],
        EventKind::Lost { count } => vec![instant(format!("{count} events lost"), json!({}))],
        EventKind::Later => Vec::new(),
        EventKind::Log(line) => vec![instant(
            match &line.ollama {
                Some(says) => format!("ollama: {}", says.summary()),
                None => format!("{}: {}", line.stream.name(), line.text.value),
            },
            json!({}),
        )],
    }
}

impl<W: Write> Sink for PerfettoSink<W> {
    fn header(&mut self, header: &Header) -> io::Result<()> {
        self.write(&json!({"ph": "M", "name": "trace_info", "pid": 0, "args": serde_json::to_value(header).unwrap_or_default()}))
    }

    fn event(&mut self, event: &TraceEvent) -> io::Result<()> {
        self.last_ns = self.last_ns.max(event.ts_ns);
        for v in trace_events(event) {
            self.write(&v)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        if let Some(v) = &summary.verdict {
            // On the deciding process's track, or across the whole trace.
            let (scope, pid) = v.pid.map_or(("g", 0), |pid| ("p", pid));
            self.write(&json!({"ph": "i", "s": scope, "name": format!("verdict: {}", v.outcome.name()), "pid": pid, "tid": pid, "ts": us(self.last_ns), "args": serde_json::to_value(v).unwrap_or_default()}))?;
        }
        self.write(&json!({"ph": "M", "name": "summary", "pid": 0, "args": serde_json::to_value(summary).unwrap_or_default()}))?;
        self.out.write_all(b"\n]\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Call, Func};

    #[test]
    fn a_trace_is_a_json_array_of_chrome_events() {
        let mut out = Vec::new();
        let mut sink = PerfettoSink::new(&mut out);
        let call = Call {
            name: Some("libcuda.so.1".into()),
            mode: Some(2),
            ret: Some(1),
            ok: Some(true),
            duration_ns: Some(2500),
            path: Some("/opt/vgpu/lib/libcuda.so.1".into()),
            class: Some(crate::model::Class::Shim),
            ..Call::new(Func::Dlopen)
        };
        let ev = TraceEvent {
            ts_ns: 5000,
            pid: 7,
            tid: 8,
            comm: "ollama".into(),
            depth: 0,
            kind: EventKind::Call(call),
        };
        sink.event(&ev).unwrap();
        let verdict = crate::judge::verdict::judge(std::slice::from_ref(&ev));
        sink.finish(&Summary {
            verdict: Some(verdict),
            ..Summary::default()
        })
        .unwrap();
        let v: Vec<Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["ph"], "X");
        assert_eq!(v[0]["name"], "dlopen(libcuda.so.1)");
        assert_eq!(
            (v[0]["ts"].as_f64(), v[0]["dur"].as_f64()),
            (Some(5.0), Some(2.5))
        );
        // The verdict is an instant on the deciding process's track, at the end.
        let verdict = v.iter().find(|e| e["ph"] == "i").expect("verdict instant");
        assert_eq!(
            (&verdict["name"], &verdict["pid"], verdict["ts"].as_f64()),
            (&json!("verdict: unfinished"), &json!(7), Some(5.0))
        );
    }
}
