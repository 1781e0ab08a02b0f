//! The session's event path: backend → reorder → collector → enrichment → verdict → sink.
//! (Arming new CUDA/NVML libraries happens apart, on the backend's arming thread.)
use std::io;
use std::sync::Arc;

use vgpu_trace_common::DlFunc;

use super::{Notices, REORDER_WINDOW_NS, enrich, reorder::Reorder};
use crate::{
    backend::Source,
    collector::Collector,
    event::{RawBody, RawEvent},
    judge::{expect::Watch, verdict::Judge},
    model::{EventKind, Header, Summary, TraceEvent},
    procfs,
    sink::Sink,
};

/// Records taken from the ring buffer at a time: when the tracer is behind, memory holds a
/// batch, not the whole ring.
const BATCH: usize = 4096;

/// backend → reorder → collector → sink.
pub(super) struct Pipeline<'s> {
    reorder: Reorder,
    pub(super) collector: Collector,
    pub(super) enricher: enrich::Enricher,
    sink: &'s mut dyn Sink,
    sink_failed: bool,
    buf: Vec<RawEvent>,
    out: Vec<TraceEvent>,
    pub(super) lost_reported: u64,
    /// Live processes missing from /proc at the last liveness check.
    vanishing: std::collections::HashSet<u32>,
    /// The session's one verdict; none in a watch, whose passes are judged one by one (a
    /// verdict over weeks would hold every process that ever touched CUDA).
    pub(super) judge: Option<Judge>,
    pub(super) until: Option<Watch>,
    notices: Notices,
    /// The `until` rule matched: the session ends at the next tick.
    pub(super) until_met: bool,
    /// Log files and journals followed (`attach --log`/`--journal`).
    pub(super) logs: Option<super::logfile::Followers>,
    /// A failing output ends the session (`watch`: its records are the point), and its error
    /// is kept here for the session to return.
    pub(super) output_errors_end: bool,
    pub(super) output_error: Option<String>,
}

impl<'s> Pipeline<'s> {
    pub(super) fn new(
        sink: &'s mut dyn Sink,
        enricher: enrich::Enricher,
        notices: Notices,
    ) -> Self {
        Self {
            reorder: Reorder::default(),
            collector: Collector::new(),
            enricher,
            sink,
            sink_failed: false,
            buf: Vec::new(),
            out: Vec::new(),
            lost_reported: 0,
            vanishing: std::collections::HashSet::new(),
            judge: Some(Judge::default()),
            until: None,
            until_met: false,
            logs: None,
            output_errors_end: false,
            output_error: None,
            notices,
        }
    }

    /// The lines the followed logs gave since the last call: not a traced process's events,
    /// they go straight to the verdict and the sinks.
    pub(super) fn follow_logs(&mut self) {
        let Some(logs) = &self.logs else {
            return;
        };
        self.out.extend(logs.take());
        self.flush();
    }

    /// A process known before any kernel event about it: straight to the collector, so
    /// that it counts as alive from the start. Written out after the header.
    pub(super) fn announce(&mut self, ev: RawEvent) {
        self.collector.push(ev, &mut self.out);
    }

    /// Moves what the kernel has sent through the pipeline, a batch at a time, releasing
    /// events older than `window_ns` to the collector and the sinks after each batch.
    pub(super) fn pump(&mut self, events: &mut dyn Source, window_ns: u64) {
        loop {
            let taken = self.pull(events);
            self.release(procfs::boottime_ns().saturating_sub(window_ns));
            if taken < BATCH {
                break;
            }
        }
    }

    /// Takes a batch of records from the kernel into the reorder buffer; returns its size.
    fn pull(&mut self, events: &mut dyn Source) -> usize {
        let mut batch = std::mem::take(&mut self.buf);
        let taken = events.drain(&mut batch, BATCH);
        for ev in batch.drain(..) {
            self.take(ev);
        }
        self.buf = batch;
        taken
    }

    /// One event from the kernel, into the reorder buffer.
    pub(super) fn take(&mut self, ev: RawEvent) {
        // Read the file behind a load while its process (often short-lived) is still there,
        // and hold the root it sees from its first event on.
        match &ev.body {
            RawBody::Existing { .. } | RawBody::Exec { .. } => self.enricher.roots.take(ev.tgid),
            RawBody::Fork { child_tgid, .. } => self.enricher.roots.inherit(*child_tgid, ev.tgid),
            _ => {}
        }
        match &ev.body {
            RawBody::DlReturn {
                loaded_path: Some(path),
                ..
            } => self.enricher.observe(ev.tgid, &path.value),
            RawBody::LibOpen { ret, path, .. } if *ret >= 0 => {
                self.enricher.observe(ev.tgid, &path.value)
            }
            RawBody::LibLinked { path, .. } => self.enricher.observe(ev.tgid, &path.value),
            // What the maps check, made later, must know: its mappings may have shrunk.
            RawBody::DlEnter {
                func: DlFunc::Dlclose,
                ..
            }
            | RawBody::Exec { .. } => self.enricher.may_unmap(ev.tgid, ev.ts_ns),
            RawBody::Exit { group_dead, .. } if *group_dead || ev.tid == ev.tgid => {
                self.enricher.may_unmap(ev.tgid, ev.ts_ns)
            }
            _ => {}
        }
        self.reorder.push(ev);
    }

    pub(super) fn release(&mut self, watermark: u64) {
        for ev in self.reorder.release(watermark) {
            self.collector.push(ev, &mut self.out);
        }
        self.collector.tick(watermark, &mut self.out);
        self.flush();
    }

    /// Turns a rise in the kernel's lost-record counter into a visible event.
    pub(super) fn note_losses(&mut self, events: &dyn Source) {
        let lost = events.lost();
        if lost > self.lost_reported {
            let count = lost - self.lost_reported;
            self.lost_reported = lost;
            self.out.push(TraceEvent {
                ts_ns: procfs::boottime_ns(),
                pid: 0,
                tid: 0,
                comm: Arc::default(),
                depth: 0,
                kind: EventKind::Lost { count },
            });
            self.flush();
        }
    }

    /// Processes that are gone although no exit was traced (lost record, pid never ran).
    /// A process that just died may still have its exit record in the ring buffer or the
    /// reorder window (a stall while arming makes that likely), so it is only forgotten when
    /// it was already missing at the previous check.
    pub(super) fn forget_vanished(&mut self) {
        let missing: std::collections::HashSet<u32> = self
            .collector
            .live_pids()
            .into_iter()
            .filter(|&pid| procfs::stat(pid).is_none())
            .collect();
        let mut gone: Vec<u32> = missing.intersection(&self.vanishing).copied().collect();
        gone.sort_unstable();
        for pid in gone {
            self.collector
                .forget(procfs::boottime_ns(), pid, &mut self.out);
        }
        self.vanishing = missing;
        self.flush();
    }

    /// The session's tick, events or not: sinks that close things by time do it now.
    pub(super) fn tick(&mut self) {
        if !self.sink_failed {
            let r = self.sink.tick();
            self.check(r);
        }
    }

    pub(super) fn finish_calls(&mut self) {
        self.collector.finish(&mut self.out);
        self.flush();
    }

    pub(super) fn header(&mut self, header: &Header) {
        let r = self.sink.header(header);
        self.check(r);
    }

    pub(super) fn finish(&mut self, summary: &Summary) {
        let r = self.sink.finish(summary);
        self.check(r);
    }

    /// Enriches, judges and writes out the collector's events, then flushes the sinks.
    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        for mut ev in std::mem::take(&mut self.out) {
            if self.sink_failed {
                break;
            }
            self.enricher.enrich(&mut ev);
            if let Some(judge) = &mut self.judge {
                judge.observe(&ev);
            }
            if let Some(watch) = &mut self.until
                && !self.until_met
                && watch.matches(&ev, || {
                    self.judge
                        .as_ref()
                        .map_or_else(|| Judge::default().verdict(), Judge::verdict)
                })
            {
                self.until_met = true;
                self.notices
                    .tell(format!("seen {}; stopping", watch.describe()));
            }
            let r = self.sink.event(&ev);
            self.check(r);
        }
        let r = self.sink.flush();
        self.check(r);
    }

    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r
            && !self.sink_failed
        {
            self.sink_failed = true;
            if self.output_errors_end {
                self.output_error = Some(e.to_string());
                self.until_met = true;
            } else if e.kind() != io::ErrorKind::BrokenPipe {
                self.notices.tell(format!(
                    "error: writing the trace failed: {e}; tracing goes on without output"
                ));
            }
        }
    }
}

/// Runs encoded ring-buffer records through the pipeline a session uses (decode, reorder,
/// collector, enrichment, verdict) into `sink`, in batches as the event loop does; for
/// measuring the pipeline's own rate (`examples/pipeline-rate.rs`).
#[doc(hidden)]
pub fn run_records<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
    sink: &mut dyn Sink,
) -> anyhow::Result<Summary> {
    let mut pipeline = Pipeline::new(
        sink,
        enrich::Enricher::new(&[], std::path::Path::new("/nonexistent"))?,
        Notices::new(|_| {}),
    );
    let mut undecodable = 0;
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let mut newest = 0;
        for bytes in records.by_ref().take(BATCH) {
            match crate::event::decode(bytes) {
                Ok(ev) => {
                    newest = newest.max(ev.ts_ns);
                    pipeline.take(ev);
                }
                Err(_) => undecodable += 1,
            }
        }
        pipeline.release(newest.saturating_sub(REORDER_WINDOW_NS));
    }
    pipeline.release(u64::MAX);
    pipeline.finish_calls();
    let summary = Summary {
        undecodable,
        verdict: pipeline.judge.as_ref().map(Judge::verdict),
        ..pipeline.collector.summary()
    };
    pipeline.finish(&summary);
    Ok(summary)
}
