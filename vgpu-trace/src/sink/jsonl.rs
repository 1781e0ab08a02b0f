//! JSON Lines: a header line, one object per event, a summary line. Events are serialised
//! straight into the writer; the session flushes per batch, so a killed tracer leaves a
//! readable (if cut) file.
use std::io::{self, Write};

use serde::Serialize;

use super::Sink;
use crate::model::{Header, Summary, TraceEvent};

pub struct JsonlSink<W: Write> {
    out: W,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer, to finish the file (sync, rename) once the summary is written.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn line<T: Serialize>(&mut self, kind: &str, value: &T) -> io::Result<()> {
        let mut v = serde_json::to_value(value).map_err(io::Error::other)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("type".into(), kind.into());
        }
        serde_json::to_writer(&mut self.out, &v).map_err(io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

impl<W: Write> Sink for JsonlSink<W> {
    fn header(&mut self, header: &Header) -> io::Result<()> {
        self.line("header", header)
    }

    fn event(&mut self, event: &TraceEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event).map_err(io::Error::other)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        self.line("summary", summary)
    }
}
