//! Where the timeline goes. Every sink takes the same events; formatting is pure, writing
//! is the sink's only I/O.
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
    fn finish(&mut self, summary: &Summary) -> io::Result<()>;
}
