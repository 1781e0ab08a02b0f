//! Several sinks fed the same events: `record` writes JSON Lines and shows the timeline.
use std::io;

use super::Sink;
use crate::model::{Header, Summary, TraceEvent};

pub struct TeeSink(pub Vec<Box<dyn Sink>>);

impl TeeSink {
    /// Every sink gets the call. One that fails is dropped and the others go on: a terminal
    /// closed early (`| head`) must not cost the record its events. An error is returned only
    /// when the last one fails.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> io::Result<()>) -> io::Result<()> {
        let mut last_error = None;
        self.0.retain_mut(|sink| match f(sink.as_mut()) {
            Ok(()) => true,
            Err(e) => {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    tracing::error!("writing one of the outputs failed: {e}");
                }
                last_error = Some(e);
                false
            }
        });
        match last_error {
            Some(e) if self.0.is_empty() => Err(e),
            _ => Ok(()),
        }
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

    fn tick(&mut self) -> io::Result<()> {
        self.each(|s| s.tick())
    }

    fn finish(&mut self, summary: &Summary) -> io::Result<()> {
        self.each(|s| s.finish(summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::jsonl::JsonlSink;

    /// A writer that fails every write, as a closed pipe does.
    struct Closed;

    impl io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_failed_output_does_not_stop_the_others() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut tee = TeeSink(vec![
            Box::new(JsonlSink::new(file.reopen().unwrap())),
            Box::new(JsonlSink::new(Closed)),
        ]);
        tee.finish(&Summary::default()).unwrap();
        assert_eq!(tee.0.len(), 1);
        let written = std::fs::read_to_string(file.path()).unwrap();
        assert!(written.contains("\"type\":\"summary\""), "{written}");
        let mut closed = TeeSink(vec![Box::new(JsonlSink::new(Closed))]);
        assert!(closed.finish(&Summary::default()).is_err());
    }
}
