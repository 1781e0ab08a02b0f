//! Cutting an endless timeline into discovery passes, each with its own verdict.
//!
//! A pass belongs to a family: the processes under one root (an `ollama serve`, or whatever
//! process started on its own). It opens at the first sign of GPU discovery in the family (a
//! CUDA/NVML library loaded or asked for, Ollama saying it discovers) and takes every event
//! of the family from then on. It closes when the root exits, shortly after Ollama states its
//! conclusion (`inference compute`), or after a quiet gap with no discovery event. What a
//! family did before its pass opened is summed up by the introductions (exec or attach) of
//! its processes still alive, so the record reads, and judges, as a trace of its own.
//!
//! State stays flat for weeks: processes leave the table with their exit, and a pass keeps at
//! most [`MAX_EVENTS`] events and lasts at most [`MAX_PASS_NS`].
use std::collections::HashMap;

use crate::judge::verdict::Judge;
use crate::model::{Class, EventKind, Func, OllamaSays, Summary, TraceEvent, Verdict};

/// Events kept of one pass; beyond, they are counted, not kept.
pub const MAX_EVENTS: usize = 100_000;
/// A pass this long is closed, whatever is still happening.
pub const MAX_PASS_NS: u64 = 600_000_000_000;
/// After Ollama's conclusion, how long the lines that go with it (one per device) may take.
const CONCLUSION_GRACE_NS: u64 = 500_000_000;

/// What part a process plays, as a metric label: Ollama's server, one of the children it
/// starts (runners, `llama-server`, `gpu-discover`), or anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Serve,
    Runner,
    Other,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Serve, Role::Runner, Role::Other];

    pub fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Runner => "runner",
            Role::Other => "other",
        }
    }

    /// The role of a process started with `argv`, whose parent plays `parent`.
    fn of(argv: &[crate::text::Text], parent: Option<Role>) -> Role {
        if matches!(parent, Some(Role::Serve | Role::Runner)) {
            return Role::Runner;
        }
        let base = |i: usize| argv.get(i).map(|a| crate::model::file_name(&a.value));
        match (base(0), argv.get(1).map(|a| a.value.as_str())) {
            (Some("ollama"), Some("serve")) => Role::Serve,
            (Some("ollama"), Some("runner" | "gpu-discover")) | (Some("llama-server"), _) => {
                Role::Runner
            }
            _ => Role::Other,
        }
    }
}

/// A live process: its family and how it was introduced.
struct Proc {
    root: u32,
    role: Role,
    /// Its exec or attach event (none for a fork that has not exec'd).
    intro: Option<TraceEvent>,
}

/// An open pass.
struct Pass {
    events: Vec<TraceEvent>,
    judge: Judge,
    dropped: u64,
    opened_ns: u64,
    /// The last discovery event's time; the quiet gap counts from it.
    last_ns: u64,
    /// Close at this time (Ollama has concluded).
    closing_ns: Option<u64>,
    /// A serve's exec fell in the pass (or just before it): serve's start-up discovery.
    serve_started: bool,
    /// One of Ollama's processes (serve or a child of it) took part.
    ollama: bool,
    lost: u64,
}

impl Pass {
    /// Serve's start-up, a later pass of Ollama's (a runner's probe, a model load), or other.
    /// By the processes in the pass, not the family's root: under `--all` the root may be the
    /// shell or service manager that started serve.
    fn role(&self) -> Role {
        match (self.serve_started, self.ollama) {
            (true, _) => Role::Serve,
            (false, true) => Role::Runner,
            (false, false) => Role::Other,
        }
    }

    fn push(&mut self, ev: &TraceEvent) {
        self.judge.observe(ev);
        if let EventKind::Lost { count } = ev.kind {
            self.lost += count;
        }
        if self.events.len() < MAX_EVENTS {
            self.events.push(ev.clone());
        } else {
            self.dropped += 1;
        }
    }
}

/// A pass, closed and judged.
pub struct Closed {
    pub role: Role,
    pub verdict: Verdict,
    pub events: Vec<TraceEvent>,
    pub summary: Summary,
    pub opened_ns: u64,
    pub closed_ns: u64,
    /// Events past [`MAX_EVENTS`], not kept.
    pub dropped: u64,
}

/// The process table and the open passes.
pub struct Passes {
    procs: HashMap<u32, Proc>,
    open: HashMap<u32, Pass>,
    /// Roots (alive) that had a pass: a later one is not their start-up's.
    had_pass: std::collections::HashSet<u32>,
    gap_ns: u64,
}

impl Passes {
    /// `gap_ns`: the quiet time after which a pass is over.
    pub fn new(gap_ns: u64) -> Self {
        Self {
            procs: HashMap::new(),
            open: HashMap::new(),
            had_pass: std::collections::HashSet::new(),
            gap_ns,
        }
    }

    /// Live processes known.
    pub fn followed(&self) -> usize {
        self.procs.len()
    }

    /// What part `pid` plays.
    pub fn role_of(&self, pid: u32) -> Role {
        self.procs.get(&pid).map_or(Role::Other, |p| p.role)
    }

    /// Takes one event; passes it closes go to `closed`.
    pub fn event(&mut self, ev: &TraceEvent, closed: &mut Vec<Closed>) {
        self.introduce(ev);
        // Lost records and followed log files belong to no process: every open pass gets them.
        if ev.pid == 0 {
            for pass in self.open.values_mut() {
                pass.push(ev);
                if concludes(ev) {
                    pass.closing_ns
                        .get_or_insert(ev.ts_ns + CONCLUSION_GRACE_NS);
                }
            }
            if opens(ev) && self.open.is_empty() {
                // A followed log's line with no process to pin it on: its own family.
                self.open_pass(0, ev.ts_ns);
                self.push(0, ev);
            }
            return;
        }
        let root = self.procs.get(&ev.pid).map_or(ev.pid, |p| p.root);
        // Once Ollama has concluded, a new process is the next pass's (a model load).
        if matches!(ev.kind, EventKind::Exec { .. } | EventKind::Spawn { .. })
            && self.open.get(&root).is_some_and(|p| p.closing_ns.is_some())
            && let Some(pass) = self.open.remove(&root)
        {
            closed.push(judge(pass, ev.ts_ns));
        }
        if !self.open.contains_key(&root) && opens(ev) {
            self.open_pass(root, ev.ts_ns);
        }
        self.push(root, ev);
        if let EventKind::Exit(_) = ev.kind {
            if ev.pid == root
                && let Some(pass) = self.open.remove(&root)
            {
                closed.push(judge(pass, ev.ts_ns));
            }
            self.procs.remove(&ev.pid);
            if ev.pid == root {
                self.had_pass.remove(&root);
            }
        }
    }

    /// Closes the passes that are over by `now_ns` (the session's clock).
    pub fn tick(&mut self, now_ns: u64, closed: &mut Vec<Closed>) {
        let gap = self.gap_ns;
        let over: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, p)| {
                p.closing_ns.is_some_and(|at| now_ns >= at)
                    || now_ns.saturating_sub(p.last_ns) >= gap
                    || now_ns.saturating_sub(p.opened_ns) >= MAX_PASS_NS
            })
            .map(|(&root, _)| root)
            .collect();
        for root in over {
            if let Some(pass) = self.open.remove(&root) {
                closed.push(judge(pass, now_ns));
            }
        }
    }

    /// Closes every open pass (the daemon stops).
    pub fn finish(&mut self, now_ns: u64, closed: &mut Vec<Closed>) {
        for pass in std::mem::take(&mut self.open).into_values() {
            closed.push(judge(pass, now_ns));
        }
    }

    /// Keeps the process table: who each process is and which family it is in.
    fn introduce(&mut self, ev: &TraceEvent) {
        let (ppid, argv) = match &ev.kind {
            EventKind::Exec { ppid, argv, .. } | EventKind::Attached { ppid, argv, .. } => {
                (*ppid, argv.as_slice())
            }
            EventKind::Spawn { child } => {
                // A fork runs its parent's program until it execs.
                if let Some(parent) = self.procs.get(&ev.pid) {
                    let (root, role) = (parent.root, parent.role);
                    self.procs.insert(
                        *child,
                        Proc {
                            root,
                            role,
                            intro: None,
                        },
                    );
                }
                return;
            }
            _ => return,
        };
        let parent = self.procs.get(&ppid).map(|p| (p.root, p.role));
        // An exec keeps the process in its family; a process whose parent is not followed
        // (or is itself) starts one.
        let root = match (self.procs.get(&ev.pid), parent) {
            (Some(me), _) => me.root,
            (None, Some((root, _))) if ppid != ev.pid => root,
            _ => ev.pid,
        };
        let role = Role::of(argv, parent.map(|(_, role)| role));
        self.procs.insert(
            ev.pid,
            Proc {
                root,
                role,
                intro: Some(ev.clone()),
            },
        );
    }

    fn open_pass(&mut self, root: u32, ts_ns: u64) {
        let mut pass = Pass {
            events: Vec::new(),
            judge: Judge::default(),
            dropped: 0,
            opened_ns: ts_ns,
            last_ns: ts_ns,
            closing_ns: None,
            serve_started: false,
            ollama: false,
            lost: 0,
        };
        // The family's live processes, introduced in the order they came.
        let mut intros: Vec<&TraceEvent> = self
            .procs
            .values()
            .filter(|p| p.root == root)
            .filter_map(|p| p.intro.as_ref())
            .collect();
        intros.sort_by_key(|e| e.ts_ns);
        let first = !self.had_pass.contains(&root);
        for intro in intros {
            // A serve started within a gap of the family's first discovery: its start-up.
            if first
                && matches!(intro.kind, EventKind::Exec { .. })
                && ts_ns.saturating_sub(intro.ts_ns) < self.gap_ns
                && self.role_of(intro.pid) == Role::Serve
            {
                pass.serve_started = true;
            }
            pass.ollama |= self.role_of(intro.pid) != Role::Other;
            pass.push(intro);
        }
        self.open.insert(root, pass);
        self.had_pass.insert(root);
    }

    fn push(&mut self, root: u32, ev: &TraceEvent) {
        let Some(pass) = self.open.get_mut(&root) else {
            return;
        };
        // (Introductions never open a pass: `ev` is not among those pushed at its opening.)
        pass.push(ev);
        let role = self.procs.get(&ev.pid).map_or(Role::Other, |p| p.role);
        pass.ollama |= role != Role::Other;
        pass.serve_started |= role == Role::Serve && matches!(ev.kind, EventKind::Exec { .. });
        if discovery(ev) {
            pass.last_ns = pass.last_ns.max(ev.ts_ns);
        }
        if concludes(ev) {
            pass.closing_ns
                .get_or_insert(ev.ts_ns + CONCLUSION_GRACE_NS);
        }
    }
}

fn judge(pass: Pass, closed_ns: u64) -> Closed {
    let role = pass.role();
    let verdict = pass.judge.verdict();
    let summary = summarize(&pass.events, pass.lost, &verdict);
    Closed {
        role,
        verdict,
        events: pass.events,
        summary,
        opened_ns: pass.opened_ns,
        closed_ns,
        dropped: pass.dropped,
    }
}

/// A pass's own counts, as a session's summary has them.
fn summarize(events: &[TraceEvent], lost: u64, verdict: &Verdict) -> Summary {
    let mut pids: Vec<u32> = events.iter().map(|e| e.pid).filter(|&p| p != 0).collect();
    pids.sort_unstable();
    pids.dedup();
    let count = |f: fn(&EventKind) -> bool| events.iter().filter(|e| f(&e.kind)).count() as u64;
    Summary {
        events: events.len() as u64,
        processes: pids.len() as u64,
        calls: count(|k| matches!(k, EventKind::Call(_))),
        loads: count(|k| matches!(k, EventKind::Load(_))),
        api_calls: count(|k| matches!(k, EventKind::Api(_))),
        lost,
        undecodable: 0,
        missed: 0,
        verdict: Some(verdict.clone()),
    }
}

/// Library names that speak of GPU discovery.
fn gpu_library(name: &str) -> bool {
    let name = crate::model::file_name(name);
    [
        "libcuda.so",
        "libnvidia-ml.so",
        "libcudart.so",
        "libggml-cuda.so",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn gpu_class(class: Option<Class>) -> bool {
    matches!(
        class,
        Some(Class::Shim | Class::NvidiaDriver | Class::CudaToolkit)
    )
}

/// Whether an event starts a pass: a CUDA/NVML library loaded or asked for, or Ollama saying
/// it discovers. (A discovery call alone does not: a runner asks for free memory for hours.)
fn opens(ev: &TraceEvent) -> bool {
    match &ev.kind {
        EventKind::Load(load) => gpu_class(load.class) || gpu_library(&load.name),
        EventKind::Call(call) if matches!(call.func, Func::Dlopen | Func::Dlmopen) => {
            gpu_class(call.class)
                || call.name.as_ref().is_some_and(|n| gpu_library(&n.value))
                || call.path.as_ref().is_some_and(|p| gpu_library(&p.value))
        }
        EventKind::Log(line) => matches!(line.ollama, Some(OllamaSays::Discovering)),
        _ => false,
    }
}

/// Whether an event keeps a pass open: anything but output and losses.
fn discovery(ev: &TraceEvent) -> bool {
    match &ev.kind {
        EventKind::Log(line) => line.ollama.is_some(),
        EventKind::Lost { .. } => false,
        _ => true,
    }
}

/// Ollama's conclusion: the pass ends shortly after.
fn concludes(ev: &TraceEvent) -> bool {
    matches!(&ev.kind, EventKind::Log(line) if matches!(line.ollama, Some(OllamaSays::InferenceCompute { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExitStatus, Load, LogLine, Stream};
    use crate::text::Text;

    const MS: u64 = 1_000_000;
    const GAP: u64 = 2_000 * MS;

    fn ev(ts_ms: u64, pid: u32, kind: EventKind) -> TraceEvent {
        TraceEvent {
            ts_ns: ts_ms * MS,
            pid,
            tid: pid,
            comm: "ollama".into(),
            depth: 0,
            kind,
        }
    }

    fn exec(ts: u64, pid: u32, ppid: u32, argv: &[&str]) -> TraceEvent {
        ev(
            ts,
            pid,
            EventKind::Exec {
                ppid,
                filename: Text::from(argv[0]),
                argv: argv.iter().map(|a| Text::from(*a)).collect(),
                argv_more: false,
                env: Vec::new(),
                container: None,
            },
        )
    }

    fn load(ts: u64, pid: u32, path: &str, class: Class) -> TraceEvent {
        let mut load = Load::new(Text::from(path), Vec::new(), None, 0x7f00_0000_0000);
        load.class = Some(class);
        ev(ts, pid, EventKind::Load(load))
    }

    fn exit(ts: u64, pid: u32) -> TraceEvent {
        ev(ts, pid, EventKind::Exit(ExitStatus::default()))
    }

    fn says(ts: u64, pid: u32, text: &str, ollama: OllamaSays) -> TraceEvent {
        ev(
            ts,
            pid,
            EventKind::Log(LogLine {
                stream: Stream::Stderr,
                text: Text::from(text),
                ollama: Some(ollama),
            }),
        )
    }

    fn feed(passes: &mut Passes, events: &[TraceEvent]) -> Vec<Closed> {
        let mut closed = Vec::new();
        for e in events {
            passes.event(e, &mut closed);
        }
        closed
    }

    fn cpu() -> OllamaSays {
        OllamaSays::InferenceCompute {
            library: "cpu".into(),
            compute: None,
            description: None,
            libdirs: None,
        }
    }

    #[test]
    fn serves_start_up_is_one_pass_that_ends_with_its_conclusion() {
        let mut passes = Passes::new(GAP);
        let closed = feed(
            &mut passes,
            &[
                exec(0, 10, 1, &["/usr/bin/ollama", "serve"]),
                exec(5, 11, 10, &["/usr/lib/ollama/llama-server", "--port", "1"]),
                load(10, 11, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(20, 11),
                // Between children, nothing: the pass stays open (serve lives).
                exec(40, 12, 10, &["/usr/bin/ollama", "gpu-discover"]),
                load(45, 12, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(50, 12),
                says(60, 10, "inference compute", cpu()),
            ],
        );
        assert!(closed.is_empty());
        assert_eq!(passes.role_of(10), Role::Serve);
        let mut closed = Vec::new();
        passes.tick(60 * MS + CONCLUSION_GRACE_NS, &mut closed);
        assert_eq!(closed.len(), 1);
        let pass = &closed[0];
        assert_eq!(pass.role, Role::Serve);
        // serve's exec came first, as the introduction; every child is in.
        assert!(matches!(pass.events[0].kind, EventKind::Exec { .. }));
        assert_eq!(pass.events[0].pid, 10);
        assert_eq!(pass.summary.processes, 3);
        assert_eq!(pass.summary.loads, 2);
        assert_eq!(pass.summary.verdict.as_ref(), Some(&pass.verdict));
    }

    #[test]
    fn a_later_runner_is_a_pass_of_its_own_introduced_by_serve() {
        let mut passes = Passes::new(GAP);
        let mut closed = feed(
            &mut passes,
            &[
                exec(0, 10, 1, &["/usr/bin/ollama", "serve"]),
                exec(
                    5,
                    11,
                    10,
                    &["/usr/lib/ollama/llama-server", "--list-devices"],
                ),
                load(10, 11, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(20, 11),
            ],
        );
        passes.tick(20 * MS + GAP, &mut closed);
        assert_eq!(closed.len(), 1, "closed by the quiet gap");
        // A model load, an hour later.
        let hour = 3_600_000;
        let closed = feed(
            &mut passes,
            &[
                exec(
                    hour,
                    20,
                    10,
                    &["/usr/lib/ollama/llama-server", "--model", "m"],
                ),
                load(hour + 5, 20, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(hour + 9, 20),
                exit(hour + 10, 10),
            ],
        );
        assert_eq!(closed.len(), 1, "closed by serve's exit");
        let pass = &closed[0];
        assert_eq!(pass.role, Role::Runner);
        let pids: Vec<u32> = pass.events.iter().map(|e| e.pid).collect();
        assert_eq!(pids, [10, 20, 20, 20, 10]);
        assert_eq!(passes.followed(), 0, "exits leave nothing behind");
    }

    #[test]
    fn a_process_started_after_the_conclusion_is_the_next_pass() {
        let mut passes = Passes::new(GAP);
        let closed = feed(
            &mut passes,
            &[
                exec(0, 10, 1, &["/usr/bin/ollama", "serve"]),
                exec(5, 11, 10, &["/usr/bin/ollama", "gpu-discover"]),
                load(10, 11, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(20, 11),
                says(30, 10, "inference compute", cpu()),
                // A model load at once, well within the conclusion's grace.
                exec(
                    31,
                    12,
                    10,
                    &["/usr/lib/ollama/llama-server", "--model", "m"],
                ),
                load(35, 12, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(40, 12),
                exit(50, 10),
            ],
        );
        let shape: Vec<(Role, u64)> = closed
            .iter()
            .map(|p| (p.role, p.summary.processes))
            .collect();
        assert_eq!(shape, [(Role::Serve, 2), (Role::Runner, 2)]);
    }

    #[test]
    fn a_serve_started_by_a_shell_has_a_start_up_pass() {
        // Under --all the family's root is whatever started serve.
        let mut passes = Passes::new(GAP);
        let closed = feed(
            &mut passes,
            &[
                exec(0, 9, 1, &["/bin/sh", "-c", "ollama serve"]),
                exec(1, 10, 9, &["/usr/bin/ollama", "serve"]),
                exec(5, 11, 10, &["/usr/bin/ollama", "gpu-discover"]),
                load(10, 11, "/opt/vgpu/libcuda.so.1", Class::Shim),
                exit(20, 11),
                exit(30, 10),
                exit(31, 9),
            ],
        );
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].role, Role::Serve);
    }

    #[test]
    fn calls_alone_open_no_pass_and_other_families_are_apart() {
        let mut passes = Passes::new(GAP);
        let api = |ts, pid| {
            ev(
                ts,
                pid,
                EventKind::Api(crate::model::ApiCall {
                    function: "cuMemGetInfo_v2".into(),
                    code: 0,
                    result: "CUDA_SUCCESS".into(),
                    values: Default::default(),
                    text: None,
                }),
            )
        };
        let mut closed = feed(
            &mut passes,
            &[
                exec(0, 30, 1, &["/usr/bin/python3", "train.py"]),
                api(5, 30),
                exec(6, 40, 1, &["/usr/bin/nvidia-smi"]),
                load(7, 40, "/usr/lib/libnvidia-ml.so.1", Class::NvidiaDriver),
            ],
        );
        passes.tick(7 * MS + GAP, &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].role, Role::Other);
        assert!(closed[0].events.iter().all(|e| e.pid == 40));
    }

    #[test]
    fn a_pass_keeps_a_bounded_number_of_events() {
        let mut passes = Passes::new(u64::MAX);
        let mut events = vec![
            exec(0, 10, 1, &["/usr/bin/ollama", "serve"]),
            load(1, 10, "/opt/vgpu/libcuda.so.1", Class::Shim),
        ];
        for i in 0..MAX_EVENTS as u64 {
            events.push(load(2 + i, 10, "/usr/lib/libfoo.so", Class::System));
        }
        events.push(exit(MAX_EVENTS as u64 + 10, 10));
        let closed = feed(&mut passes, &events);
        assert_eq!(closed[0].events.len(), MAX_EVENTS);
        assert_eq!(closed[0].dropped, 3);
    }
}
