//! `vgpu-trace watch`: a session that never ends on its own, cut into discovery passes. Each
//! pass is judged; the verdicts feed Prometheus metrics, and the passes that did not end on
//! the shim (plus the last that did) are kept as records for the person who follows the
//! alert. The session, its backend and its pipeline are `attach`'s; only the sink differs.
pub mod metrics;
mod passes;
mod records;
mod serve;

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::metrics::Metrics;
use self::passes::{Closed, Passes};
use self::records::Records;
use crate::failure::{FailAs as _, Failure};
use crate::model::{Header, Summary, TraceEvent};
use crate::sink::{CustomSink, Sink};

pub use self::passes::Role;

/// Where and how `watch` keeps what it saw.
#[derive(Clone, Debug)]
pub struct Options {
    /// The records directory (created 0700).
    pub records: PathBuf,
    /// Records kept at most, and their total size at most.
    pub keep: usize,
    pub max_bytes: u64,
    /// A pass with no discovery event for this long is over.
    pub gap: Duration,
    /// Where `/metrics` is served.
    pub metrics: SocketAddr,
}

/// Prepares a watch: the records directory proven writable and the metrics address bound,
/// both before anything is traced, so that bad input is an error at once (exit 2). Returns
/// the sink the session writes into, and the address actually bound.
pub fn prepare(opts: &Options) -> anyhow::Result<(CustomSink, SocketAddr)> {
    Records::open(&opts.records, opts.keep, opts.max_bytes).fail_as(Failure::Usage)?;
    let metrics = Arc::new(Metrics::new());
    let bound = serve::start(opts.metrics, metrics.clone()).fail_as(Failure::Usage)?;
    let opts = opts.clone();
    let sink = CustomSink::new(move || {
        let records =
            Records::open(&opts.records, opts.keep, opts.max_bytes).fail_as(Failure::Usage)?;
        Ok(Box::new(WatchSink {
            passes: Passes::new(opts.gap.as_nanos() as u64),
            records,
            metrics: metrics.clone(),
            header: None,
            closed: Vec::new(),
            count: 0,
            healthy: None,
            healthy_written: None,
        }) as Box<dyn Sink>)
    });
    Ok((sink, bound))
}

/// The sink of a watch.
struct WatchSink {
    passes: Passes,
    records: Records,
    metrics: Arc<Metrics>,
    /// The session's, as each record's header.
    header: Option<Header>,
    closed: Vec<Closed>,
    /// Passes so far.
    count: u64,
    /// The last healthy pass, held back (see [`HEALTHY_EVERY`]), and when one was last written.
    healthy: Option<Held>,
    healthy_written: Option<std::time::Instant>,
}

/// How often at most the last healthy pass is written: a fleet's hosts discover through the
/// shim all day, and a record (with its fsync) per pass would cost the event path more than
/// the pass itself. A pass that did not end on the shim is always written at once, after the
/// healthy one held back, so the directory shows the last good pass before each bad one.
const HEALTHY_EVERY: Duration = Duration::from_secs(60);

/// Whether a pass that ended so is healthy: discovery used the shim.
fn healthy(outcome: crate::model::Outcome) -> bool {
    outcome == crate::model::Outcome::ShimUsed
}

/// A healthy pass whose record is not written yet.
struct Held {
    number: u64,
    unix_ms: u64,
    pass: Closed,
}

impl WatchSink {
    /// Judged passes: metrics, a record where one is kept, and a line on stdout.
    fn conclude(&mut self) -> io::Result<()> {
        for pass in std::mem::take(&mut self.closed) {
            self.count += 1;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.metrics
                .pass(pass.verdict.outcome, pass.role, now.as_secs_f64());
            let line = describe(self.count, &pass);
            let held = Held {
                number: self.count,
                unix_ms: now.as_millis() as u64,
                pass,
            };
            let healthy = healthy(held.pass.verdict.outcome);
            let written = if healthy
                && self
                    .healthy_written
                    .is_some_and(|at| at.elapsed() < HEALTHY_EVERY)
            {
                self.healthy = Some(held);
                "its record is written within a minute, or at exit".to_string()
            } else {
                self.write_healthy()?;
                let path = self.write(&held)?;
                if healthy {
                    self.healthy_written = Some(std::time::Instant::now());
                }
                format!("→ {}", path.display())
            };
            let mut out = io::stdout().lock();
            // A closed stdout (no journal) must not stop the watch.
            let _ = writeln!(
                out,
                "{}",
                crate::sanitize::plain(&format!("{line} {written}"))
            );
            let _ = out.flush();
        }
        if self
            .healthy_written
            .is_none_or(|at| at.elapsed() >= HEALTHY_EVERY)
        {
            self.write_healthy()?;
        }
        self.metrics.followed(self.passes.followed());
        Ok(())
    }

    /// Writes the healthy pass held back, if any.
    fn write_healthy(&mut self) -> io::Result<()> {
        if let Some(held) = self.healthy.take() {
            self.write(&held)?;
            self.healthy_written = Some(std::time::Instant::now());
        }
        Ok(())
    }

    fn write(&mut self, held: &Held) -> io::Result<PathBuf> {
        let header = self.header.clone().unwrap_or_else(bare_header);
        let pass = &held.pass;
        self.records
            .write(held.unix_ms, &header, &pass.events, &pass.summary)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot write the record of pass {} ({}): {e}; the records \
                         already written ({}) are intact",
                        held.number,
                        pass.verdict.outcome.name(),
                        self.records.count()
                    ),
                )
            })
    }
}

/// A pass's line on stdout, up to where its record is.
fn describe(number: u64, pass: &Closed) -> String {
    let took = pass.closed_ns.saturating_sub(pass.opened_ns) as f64 / 1e9;
    let dropped = match pass.dropped {
        0 => String::new(),
        n => format!(
            " ({n} events past the first {} not kept)",
            passes::MAX_EVENTS
        ),
    };
    format!(
        "pass {number} ({}, {took:.1} s, {} processes): {}{dropped}",
        pass.role.name(),
        pass.summary.processes,
        pass.verdict,
    )
}

/// A record's header when the session gave none (it always does before its first event).
fn bare_header() -> Header {
    Header {
        format: "vgpu-trace".into(),
        format_version: crate::model::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kernel: String::new(),
        host: String::new(),
        backend: String::new(),
        mode: "watch".into(),
        target: Vec::new(),
        probed: Vec::new(),
        shims: Vec::new(),
    }
}

fn now_ns() -> u64 {
    crate::procfs::boottime_ns()
}

impl Sink for WatchSink {
    fn header(&mut self, header: &Header) -> io::Result<()> {
        self.metrics.backend(&header.backend);
        self.header = Some(Header {
            mode: "watch".into(),
            ..header.clone()
        });
        Ok(())
    }

    fn event(&mut self, event: &TraceEvent) -> io::Result<()> {
        self.metrics.event(event, || self.passes.role_of(event.pid));
        self.passes.event(event, &mut self.closed);
        if self.closed.is_empty() {
            Ok(())
        } else {
            self.conclude()
        }
    }

    /// Records are written whole as passes close; passes close by time on the session's tick.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn tick(&mut self) -> io::Result<()> {
        self.passes.tick(now_ns(), &mut self.closed);
        self.conclude()
    }

    fn finish(&mut self, _summary: &Summary) -> io::Result<()> {
        self.passes.finish(now_ns(), &mut self.closed);
        self.conclude()?;
        self.write_healthy()
    }
}
