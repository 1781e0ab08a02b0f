//! Where the timeline goes. Every sink takes the same events; formatting is pure, writing
//! is the sink's only I/O. Sinks buffer: the session flushes them after each batch of events
//! and at the end, so a killed tracer loses at most the batch in hand.
mod compact;
mod jsonl;
mod outputs;
mod paint;
mod perfetto;
mod tee;
mod timeline;

use std::io;

pub use self::{
    compact::{CompactSink, VerdictSink},
    jsonl::JsonlSink,
    outputs::{ColorChoice, Format, Outputs},
    perfetto::PerfettoSink,
    tee::TeeSink,
    timeline::TimelineSink,
};
use crate::model::{Header, Summary, TraceEvent};

pub trait Sink {
    fn header(&mut self, header: &Header) -> io::Result<()>;
    fn event(&mut self, event: &TraceEvent) -> io::Result<()>;
    /// Writes out what is buffered (the summary is flushed by `finish` itself).
    fn flush(&mut self) -> io::Result<()>;
    /// Time passed with no event (the session's tick): for a sink that closes what it holds
    /// by time (`watch`'s passes).
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self, summary: &Summary) -> io::Result<()>;
}

/// A sink made by the command that runs the session (`watch`'s), in place of the timeline.
#[derive(Clone)]
pub struct CustomSink(std::sync::Arc<dyn Fn() -> anyhow::Result<Box<dyn Sink>> + Send + Sync>);

impl CustomSink {
    pub fn new(make: impl Fn() -> anyhow::Result<Box<dyn Sink>> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(make))
    }

    pub fn open(&self) -> anyhow::Result<Box<dyn Sink>> {
        (self.0)()
    }
}

impl std::fmt::Debug for CustomSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomSink")
    }
}

/// How much of the timeline a person sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Compact on a terminal, full otherwise.
    #[default]
    Auto,
    /// One line per decision that matters (see `compact`).
    Compact,
    /// Every event.
    Full,
    /// The verdict only.
    Quiet,
}

/// The text sink for `view`, writing to `out` (a terminal when `is_tty`).
pub fn text_sink<W: io::Write + 'static>(
    out: W,
    color: bool,
    view: View,
    is_tty: bool,
) -> Box<dyn Sink> {
    match view {
        View::Quiet => Box::new(VerdictSink { out }),
        View::Compact => Box::new(CompactSink::new(out, color, terminal_width())),
        View::Auto if is_tty => Box::new(CompactSink::new(out, color, terminal_width())),
        View::Auto | View::Full => Box::new(TimelineSink::new(out, color)),
    }
}

/// Columns of the terminal on stdout (`COLUMNS` first), or 120.
fn terminal_width() -> usize {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return n;
    }
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct it is given.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        120
    }
}
