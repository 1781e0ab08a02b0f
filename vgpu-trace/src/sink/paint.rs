//! The timeline's colours, named by what they mean, drawn with anstyle (clap's own).
use anstyle::{AnsiColor, Style};

/// No colour.
pub const PLAIN: Style = Style::new();
/// Headers, processes starting and ending.
pub const BOLD: Style = Style::new().bold();
/// What matters less: times, durations, paths tried, legends.
pub const DIM: Style = Style::new().dimmed();
/// A failure worth seeing first: lost events, a failing verdict or result.
pub const ALARM: Style = AnsiColor::Red.on_default().bold();
/// A failed call's own words (dlerror, a failed exec).
pub const FAILED: Style = AnsiColor::Red.on_default();
/// A successful result.
pub const OK: Style = AnsiColor::Green.on_default();
/// A passing verdict.
pub const GOOD: Style = AnsiColor::Green.on_default().bold();
/// A call still under way.
pub const PENDING: Style = AnsiColor::Yellow.on_default();
/// A warning the tracer adds (a load ld.so did differently than the model).
pub const WARNING: Style = AnsiColor::Yellow.on_default().bold();
/// Classes, pids, what a dlopen brought in.
pub const NOTE: Style = AnsiColor::Cyan.on_default();
/// What Ollama says of itself, and the model's predictions.
pub const OLLAMA: Style = AnsiColor::Magenta.on_default().bold();

/// `s` in `style` when colour is `on`, else as it is.
pub fn paint(on: bool, style: Style, s: &str) -> String {
    if on && style != Style::new() {
        format!("{style}{s}{style:#}")
    } else {
        s.to_string()
    }
}
