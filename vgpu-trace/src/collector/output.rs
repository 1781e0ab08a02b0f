//! A process's writes to stdout and stderr, cut into lines: a write may hold several lines or
//! part of one, and only its first `OUTPUT_MAX` bytes are kept.
use vgpu_trace_common::OUTPUT_MAX;

use crate::judge::ollama_log::log_line;
use crate::model::{LogLine, Stream};

/// The unfinished last line of each stream.
#[derive(Debug, Default)]
pub struct Lines {
    partial: [Vec<u8>; 2],
}

impl Lines {
    /// A write of `count` bytes to `fd`, of which `bytes` were kept: the lines it finished.
    pub fn push(&mut self, fd: u32, count: u64, bytes: &[u8]) -> Vec<LogLine> {
        let Some(stream) = Stream::of_fd(fd) else {
            return Vec::new();
        };
        let buf = &mut self.partial[usize::from(stream == Stream::Stderr)];
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&rest[..end]);
            out.push(log_line(stream, &std::mem::take(buf), false));
            rest = &rest[end + 1..];
        }
        buf.extend_from_slice(rest);
        // What was not kept of the write ends the line here; so does a line that never ends.
        if (count > bytes.len() as u64 && !buf.is_empty()) || buf.len() >= OUTPUT_MAX {
            out.push(log_line(stream, &std::mem::take(buf), true));
        }
        out
    }

    /// The unfinished lines, when the process is gone.
    pub fn flush(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buf = std::mem::take(&mut self.partial[usize::from(stream == Stream::Stderr)]);
            if !buf.is_empty() {
                out.push(log_line(stream, &buf, false));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<LogLine>) -> Vec<(Stream, String, bool)> {
        lines
            .into_iter()
            .map(|l| (l.stream, l.text.value, l.text.truncated))
            .collect()
    }

    #[test]
    fn writes_become_lines_per_stream() {
        let mut l = Lines::default();
        assert_eq!(
            texts(l.push(2, 6, b"one\ntw")),
            [(Stream::Stderr, "one".into(), false)]
        );
        assert!(l.push(1, 3, b"out").is_empty());
        assert_eq!(
            texts(l.push(2, 9, b"o\r\nthree\n")),
            [
                (Stream::Stderr, "two".into(), false),
                (Stream::Stderr, "three".into(), false)
            ]
        );
        assert_eq!(texts(l.flush()), [(Stream::Stdout, "out".into(), false)]);
        assert!(l.push(5, 3, b"x\n").is_empty());
    }

    #[test]
    fn a_write_cut_short_ends_its_line_as_truncated() {
        let mut l = Lines::default();
        assert_eq!(
            texts(l.push(1, 10_000, b"first\nsecond part")),
            [
                (Stream::Stdout, "first".into(), false),
                (Stream::Stdout, "second part".into(), true)
            ]
        );
        assert!(l.flush().is_empty());
        let long = vec![b'a'; OUTPUT_MAX];
        assert_eq!(l.push(1, OUTPUT_MAX as u64, &long).len(), 1);
    }
}
