//! Where the timeline goes. Every sink takes the same events; formatting is pure, writing
//! is the sink's only I/O. Sinks buffer: the session flushes them after each batch of events
//! and at the end, so a killed tracer loses at most the batch in hand.
mod jsonl;
mod perfetto;
mod tee;
mod timeline;

use std::io;

pub use self::{jsonl::JsonlSink, perfetto::PerfettoSink, tee::TeeSink, timeline::TimelineSink};
use crate::model::{Header, Summary, TraceEvent};

pub trait Sink {
    fn header(&mut self, header: &Header) -> io::Result<()>;
    fn event(&mut self, event: &TraceEvent) -> io::Result<()>;
    /// Writes out what is buffered (the summary is flushed by `finish` itself).
    fn flush(&mut self) -> io::Result<()>;
    fn finish(&mut self, summary: &Summary) -> io::Result<()>;
}
