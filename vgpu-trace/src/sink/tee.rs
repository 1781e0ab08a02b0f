//! Several sinks fed the same events: `record` writes JSON Lines and shows the timeline.
use std::io;

use super::Sink;
use crate::model::{Header, Summary, TraceEvent};

pub struct TeeSink(pub Vec<Box<dyn Sink>>);

impl TeeSink {
    /// Every sink gets the call; the first error is reported after all have had it.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        let mut first = Ok(());
        for sink in &mut self.0 {
            if let Err(e) = f(sink.as_mut())
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

impl Sink for TeeSink {
    fn header(&mut self, header: &Header) -> io::Result<()> {
        self.each(|s| s.header(header))
    }

    fn event(&mut self, event: &TraceEvent) -> io::Result<()> {
        self.each(|s| s.event(event))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }

    fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        self.each(|s| s.finish(summary))
    }
}
