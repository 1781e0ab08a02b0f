//! The collector owns all process state: it turns raw events, in timestamp order, into the
//! timeline — processes keyed by tgid and start time, threads mapped to their process,
//! `dl*` entries matched with their returns per thread, and `dlerror` text tied to the
//! failed call it explains. Pure: no I/O.
use std::collections::HashMap;
use std::sync::Arc;

mod exec;
mod loads;
mod output;

use crate::{
    event::{RawBody, RawEvent},
    model::codes,
    model::{ApiCall, Call, EventKind, ExitStatus, Func, Load, Summary, TraceEvent},
    text::Text,
};

/// How long a failed call waits for the thread's `dlerror()` before it is reported without.
const DLERROR_WAIT_NS: u64 = 200_000_000;

#[derive(Debug)]
struct Process {
    /// Start time (fork, exec or /proc start), with the tgid the process's identity.
    start_ns: u64,
    ppid: u32,
    comm: Arc<str>,
    depth: u32,
    threads: HashMap<u32, ThreadState>,
    loads: loads::Loads,
    output: output::Lines,
}

#[derive(Debug, Default)]
struct ThreadState {
    /// Calls entered and not yet returned (dlopen may nest through constructors).
    open: Vec<(u64, Call)>,
    /// A failed call waiting for `dlerror()`, with the time it returned.
    failed: Option<(u64, u64, Call)>,
    /// Objects mapped while the outermost dlopen in flight runs.
    gained: Vec<Text>,
}

#[derive(Debug, Default)]
pub struct Collector {
    procs: HashMap<u32, Process>,
    /// argv and environment areas of an exec, by thread, until its `Exec` record.
    execs: HashMap<u32, exec::Areas>,
    summary: Summary,
}

impl Collector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Processes not yet seen to exit.
    pub fn live_pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Counts so far (`lost` and `undecodable` are the backend's to fill in).
    pub fn summary(&self) -> Summary {
        self.summary.clone()
    }

    pub fn push(&mut self, ev: RawEvent, out: &mut Vec<TraceEvent>) {
        self.summary.events += 1;
        let RawEvent {
            ts_ns,
            tgid,
            tid,
            body,
        } = ev;
        match body {
            RawBody::Existing {
                ppid,
                comm,
                exe,
                argv,
                env,
                announce,
            } => {
                let depth = self.procs.get(&ppid).map_or(0, |p| p.depth + 1);
                self.insert(tgid, ts_ns, ppid, comm.into(), depth);
                if announce {
                    out.push(self.event(
                        ts_ns,
                        tgid,
                        tid,
                        EventKind::Attached {
                            ppid,
                            exe,
                            argv,
                            env,
                            container: None,
                        },
                    ));
                }
            }
            RawBody::Fork { child_tgid } => {
                let (comm, depth) = self
                    .procs
                    .get(&tgid)
                    .map_or((Arc::default(), 0), |p| (p.comm.clone(), p.depth + 1));
                self.insert(child_tgid, ts_ns, tgid, comm, depth);
                out.push(self.event(ts_ns, tgid, tid, EventKind::Spawn { child: child_tgid }));
            }
            RawBody::ExecArea {
                env,
                offset,
                total,
                bytes,
            } => self
                .execs
                .entry(tid)
                .or_default()
                .add(env, offset, total, &bytes),
            RawBody::ExecFail {
                errno,
                filename,
                argv,
                more: _,
            } => {
                self.process(tgid, ts_ns);
                out.push(self.event(
                    ts_ns,
                    tgid,
                    tid,
                    EventKind::ExecFailed {
                        filename,
                        argv,
                        errno,
                        error: std::io::Error::from_raw_os_error(errno).to_string(),
                    },
                ));
            }
            RawBody::Exec {
                old_tid: _,
                comm,
                filename,
            } => {
                let areas = self.execs.remove(&tid).unwrap_or_default();
                let (argv, argv_more) = areas.argv();
                let proc = self.process(tgid, ts_ns);
                proc.comm = comm.into();
                proc.loads = loads::Loads::default();
                let ppid = proc.ppid;
                // exec ends every other thread and every call in flight.
                self.flush_threads(tgid, out);
                out.push(self.event(
                    ts_ns,
                    tgid,
                    tid,
                    EventKind::Exec {
                        ppid,
                        filename,
                        argv,
                        argv_more,
                        env: areas.env(),
                        container: None,
                    },
                ));
            }
            RawBody::Exit { status, group_dead } => {
                if let Some(state) = self
                    .procs
                    .get_mut(&tgid)
                    .and_then(|p| p.threads.remove(&tid))
                {
                    self.flush_thread(tgid, tid, state, out);
                }
                if group_dead {
                    let status = status.map(ExitStatus::from_wait_status).unwrap_or_default();
                    self.end_process(ts_ns, tgid, tid, status, out);
                }
            }
            RawBody::DlEnter {
                func,
                mode,
                arg,
                name,
                version,
            } => {
                let func = Func::from(func);
                let call = Call {
                    name,
                    version,
                    mode: matches!(func, Func::Dlopen | Func::Dlmopen).then_some(mode),
                    handle: (func != Func::Dlopen).then_some(arg),
                    ..Call::new(func)
                };
                let waiting = self.thread(tgid, tid, ts_ns).failed.take();
                if let Some((start, _, call)) = waiting {
                    self.emit_call(start, tgid, tid, call, out);
                }
                self.thread(tgid, tid, ts_ns).open.push((ts_ns, call));
            }
            RawBody::DlReturn {
                func,
                ret,
                late_name,
                loaded_path,
            } => {
                let func = Func::from(func);
                let thread = self.thread(tgid, tid, ts_ns);
                let Some(pos) = thread.open.iter().rposition(|(_, c)| c.func == func) else {
                    tracing::debug!(
                        "{tgid}/{tid}: {} returned without a traced entry",
                        func.name()
                    );
                    return;
                };
                // Anything entered after the matching call never returned (e.g. longjmp).
                let unfinished: Vec<_> = thread.open.drain(pos + 1..).collect();
                let (start, mut call) = thread.open.pop().expect("position found above");
                if let Some((name, version)) = late_name {
                    (call.name, call.version) = (name, version);
                }
                call.path = loaded_path;
                call.ret = Some(ret);
                call.ok = Some(func.succeeded(ret));
                call.duration_ns = Some(ts_ns.saturating_sub(start));
                if matches!(func, Func::Dlopen | Func::Dlmopen) && thread.open.is_empty() {
                    // The outermost dlopen is over: what it probed and mapped belongs to it (a
                    // failed one's mappings were rolled back).
                    let gained = std::mem::take(&mut thread.gained);
                    if call.ok == Some(true) {
                        call.gained = gained;
                    }
                    let probes = self.process(tgid, ts_ns).loads.take_probes(tid);
                    if call.ok == Some(false) {
                        call.probes = probes;
                    }
                }
                let thread = self.thread(tgid, tid, ts_ns);
                if call.ok == Some(false) {
                    thread.failed = Some((start, ts_ns, call));
                } else {
                    self.emit_call(start, tgid, tid, call, out);
                }
                for (s, c) in unfinished {
                    self.emit_call(s, tgid, tid, c, out);
                }
            }
            RawBody::LibOpen { ret, path, .. } => {
                self.process(tgid, ts_ns).loads.open(tid, ret, path);
            }
            RawBody::LibMmap { fd, addr, .. } => {
                let Some(opened) = self.process(tgid, ts_ns).loads.mapped(fd) else {
                    return;
                };
                let load = self.load(ts_ns, tgid, opened.tid, opened.path, addr as u64);
                out.push(self.event(
                    ts_ns,
                    tgid,
                    opened.tid,
                    EventKind::Load(Load {
                        probes: opened.probes,
                        ..load
                    }),
                ));
            }
            RawBody::LibLinked { path, base } => {
                let load = self.load(ts_ns, tgid, tid, path, base);
                let load = Load {
                    linked: true,
                    ..load
                };
                out.push(self.event(ts_ns, tgid, tid, EventKind::Load(load)));
            }
            RawBody::LibClose { fd } => self.process(tgid, ts_ns).loads.close(fd),
            RawBody::ApiReturn {
                id,
                ret,
                outs,
                text,
            } => {
                let Some(spec) = vgpu_trace_common::api::spec(id) else {
                    return;
                };
                let values = spec
                    .labels
                    .iter()
                    .zip(outs)
                    .filter(|(label, _)| !label.is_empty())
                    .map(|(label, v)| (label.to_string(), v))
                    .collect();
                let result = if spec.nvml {
                    codes::nvml_return(ret)
                } else {
                    codes::cuda_result(ret)
                };
                let call = ApiCall {
                    function: spec.name.to_string(),
                    code: ret,
                    result: result.to_string(),
                    values,
                    text,
                };
                self.summary.api_calls += 1;
                out.push(self.event(ts_ns, tgid, tid, EventKind::Api(call)));
            }
            RawBody::Output { fd, count, bytes } => {
                let Some(proc) = self.procs.get_mut(&tgid) else {
                    return;
                };
                for line in proc.output.push(fd, count, &bytes) {
                    out.push(self.event(ts_ns, tgid, tid, EventKind::Log(line)));
                }
            }
            RawBody::DlError { text } => {
                let thread = self.thread(tgid, tid, ts_ns);
                match thread.failed.take() {
                    Some((start, _, mut call)) => {
                        call.error = Some(text);
                        self.emit_call(start, tgid, tid, call, out);
                    }
                    None => tracing::debug!(
                        "{tgid}/{tid}: dlerror {:?} with no failed call",
                        text.value
                    ),
                }
            }
        }
    }

    /// Reports failed calls whose thread has not asked `dlerror()` within the wait.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<TraceEvent>) {
        let mut due = Vec::new();
        for (&tgid, proc) in &mut self.procs {
            for (&tid, t) in &mut proc.threads {
                if t.failed
                    .as_ref()
                    .is_some_and(|(_, ret_ts, _)| now_ns.saturating_sub(*ret_ts) > DLERROR_WAIT_NS)
                {
                    let (start, _, call) = t.failed.take().expect("checked");
                    due.push((start, tgid, tid, call));
                }
            }
        }
        due.sort_by_key(|d| d.0);
        for (start, tgid, tid, call) in due {
            self.emit_call(start, tgid, tid, call, out);
        }
    }

    /// A live process is gone without a traced exit (lost record, or vanished).
    pub fn forget(&mut self, ts_ns: u64, tgid: u32, out: &mut Vec<TraceEvent>) {
        let status = ExitStatus {
            unseen: true,
            ..ExitStatus::default()
        };
        self.end_process(ts_ns, tgid, tgid, status, out);
    }

    /// Ends the trace: every call still open is reported as unfinished.
    pub fn finish(&mut self, out: &mut Vec<TraceEvent>) {
        let mut pids = self.live_pids();
        pids.sort_unstable();
        for tgid in pids {
            self.flush_threads(tgid, out);
        }
    }

    /// Reports every call still open in any thread of `tgid` and forgets the threads.
    fn flush_threads(&mut self, tgid: u32, out: &mut Vec<TraceEvent>) {
        let threads: Vec<_> = self
            .procs
            .get_mut(&tgid)
            .map(|p| p.threads.drain().collect())
            .unwrap_or_default();
        for (tid, state) in threads {
            self.flush_thread(tgid, tid, state, out);
        }
    }

    fn end_process(
        &mut self,
        ts_ns: u64,
        tgid: u32,
        tid: u32,
        status: ExitStatus,
        out: &mut Vec<TraceEvent>,
    ) {
        self.flush_threads(tgid, out);
        let unfinished = self
            .procs
            .get_mut(&tgid)
            .map(|p| p.output.flush())
            .unwrap_or_default();
        for line in unfinished {
            out.push(self.event(ts_ns, tgid, tid, EventKind::Log(line)));
        }
        if self.procs.contains_key(&tgid) {
            out.push(self.event(ts_ns, tgid, tid, EventKind::Exit(status)));
            self.procs.remove(&tgid);
        }
    }

    fn flush_thread(&mut self, tgid: u32, tid: u32, state: ThreadState, out: &mut Vec<TraceEvent>) {
        let mut calls: Vec<(u64, Call)> = state.open;
        if let Some((start, _, call)) = state.failed {
            calls.push((start, call));
        }
        calls.sort_by_key(|c| c.0);
        for (start, call) in calls {
            self.emit_call(start, tgid, tid, call, out);
        }
    }

    /// A library mapped by thread `tid`, with the dlopen in flight on it (which gains it), if
    /// any.
    fn load(&mut self, ts_ns: u64, tgid: u32, tid: u32, path: Text, addr: u64) -> Load {
        let thread = self.thread(tgid, tid, ts_ns);
        let during = thread
            .open
            .iter()
            .rev()
            .find(|(_, c)| matches!(c.func, Func::Dlopen | Func::Dlmopen))
            .and_then(|(_, c)| c.name.clone());
        if during.is_some() {
            thread.gained.push(path.clone());
        }
        self.summary.loads += 1;
        Load::new(path, Vec::new(), during, addr)
    }

    fn emit_call(
        &mut self,
        start: u64,
        tgid: u32,
        tid: u32,
        mut call: Call,
        out: &mut Vec<TraceEvent>,
    ) {
        if call.ok == Some(false) && matches!(call.func, Func::Dlopen | Func::Dlmopen) {
            let error = call.error.as_ref().map(|e| e.value.as_str());
            call.failed_step = Some(crate::model::failed_step(error, &call.probes).to_string());
        }
        self.summary.calls += 1;
        out.push(self.event(start, tgid, tid, EventKind::Call(call)));
    }

    fn insert(&mut self, tgid: u32, start_ns: u64, ppid: u32, comm: Arc<str>, depth: u32) {
        if let Some(old) = self.procs.get(&tgid) {
            // A new start for a known tgid is pid reuse: the old process is gone.
            tracing::debug!("pid {tgid} reused (was started at {} ns)", old.start_ns);
        }
        self.procs.insert(
            tgid,
            Process {
                start_ns,
                ppid,
                comm,
                depth,
                threads: HashMap::new(),
                loads: loads::Loads::default(),
                output: output::Lines::default(),
            },
        );
        self.summary.processes += 1;
    }

    /// The process, created on first sight when no fork or attach announced it
    /// (system-wide mode, or a record lost).
    fn process(&mut self, tgid: u32, ts_ns: u64) -> &mut Process {
        if !self.procs.contains_key(&tgid) {
            self.insert(tgid, ts_ns, 0, Arc::default(), 0);
        }
        self.procs.get_mut(&tgid).expect("inserted above")
    }

    fn thread(&mut self, tgid: u32, tid: u32, ts_ns: u64) -> &mut ThreadState {
        self.process(tgid, ts_ns).threads.entry(tid).or_default()
    }

    fn event(&self, ts_ns: u64, pid: u32, tid: u32, kind: EventKind) -> TraceEvent {
        let (comm, depth) = self
            .procs
            .get(&pid)
            .map_or((Arc::default(), 0), |p| (p.comm.clone(), p.depth));
        TraceEvent {
            ts_ns,
            pid,
            tid,
            comm,
            depth,
            kind,
        }
    }
}

#[cfg(test)]
mod tests;
