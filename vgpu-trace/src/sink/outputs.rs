//! Where a session's or a replay's timeline goes, and the one place its sinks are built: the
//! main output (a file, or stdout as text or JSON Lines), plus a record and a Perfetto trace.
use std::io::{self, IsTerminal as _, Write};
use std::path::PathBuf;

use super::{JsonlSink, PerfettoSink, Sink, TeeSink, View, text_sink};
use crate::output::create_private;

/// Bytes buffered in front of each output: the session flushes after each batch.
const BUFFER: usize = 256 << 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A timeline for people.
    #[default]
    Text,
    /// JSON Lines: header, one object per event, summary.
    Jsonl,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR (or CLICOLOR=0, TERM=dumb) says otherwise.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to paint output going to a terminal (`is_tty`): `auto` means a terminal whose
    /// environment allows colour (`NO_COLOR`, `CLICOLOR`, `TERM`, as anstream reads them).
    pub fn enabled(self, is_tty: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                is_tty
                    && anstream::AutoStream::choice(&io::stdout()) != anstream::ColorChoice::Never
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub format: Format,
    /// Write here (mode 0600) instead of stdout.
    pub output: Option<PathBuf>,
    /// Also record JSON Lines here.
    pub record: Option<PathBuf>,
    /// Also write a Chrome/Perfetto trace here.
    pub perfetto: Option<PathBuf>,
    pub color: ColorChoice,
    /// How much of the timeline a person sees (text format).
    pub view: View,
    /// Everything goes to this sink instead (`watch`).
    pub custom: Option<super::CustomSink>,
}

impl Outputs {
    /// Whether the timeline goes to a person's terminal as text (where the verdict shows).
    pub fn text_on_stdout(&self) -> bool {
        self.format == Format::Text && self.output.is_none() && self.custom.is_none()
    }

    /// The sinks, every file created private (mode 0600).
    pub fn open(&self) -> anyhow::Result<Box<dyn Sink>> {
        if let Some(custom) = &self.custom {
            return custom.open();
        }
        // Buffered outside the trait object, so serialising writes into the buffer directly.
        let (out, is_tty): (Box<dyn Write>, bool) = match &self.output {
            Some(path) => (Box::new(create_private(path)?), false),
            None => (Box::new(io::stdout()), io::stdout().is_terminal()),
        };
        let out = io::BufWriter::with_capacity(BUFFER, out);
        let main: Box<dyn Sink> = match self.format {
            Format::Text => text_sink(out, self.color.enabled(is_tty), self.view, is_tty),
            Format::Jsonl => Box::new(JsonlSink::new(out)),
        };
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(path) = &self.record {
            let file = io::BufWriter::with_capacity(BUFFER, create_private(path)?);
            sinks.push(Box::new(JsonlSink::new(file)));
        }
        if let Some(path) = &self.perfetto {
            sinks.push(Box::new(PerfettoSink::new(io::BufWriter::new(
                create_private(path)?,
            ))));
        }
        if sinks.is_empty() {
            return Ok(main);
        }
        sinks.push(main);
        Ok(Box::new(TeeSink(sinks)))
    }
}
