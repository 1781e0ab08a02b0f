//! Comparing two traces without caring about pids, times or addresses: processes are matched by
//! role (command name and argument shape, numbers and directories dropped), and each role's
//! evidence is reduced to subjects (a load, a dlopen, a dlsym, an API function) with outcomes.
//! What appeared, disappeared or changed outcome is the difference.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::verdict::judge;
use crate::model::{EventKind, TraceEvent, file_name};

/// The role under which the run's verdict is compared.
const RUN: &str = "(the run)";

/// Role → subject → outcomes.
pub type Profile = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Digits become N and paths their file name, so runs with other pids, ports and scratch
/// directories look alike.
fn shape(arg: &str) -> String {
    let arg = if arg.contains('/') {
        file_name(arg)
    } else {
        arg
    };
    let mut out = String::new();
    for c in arg.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The role an exec (or an attached process) gives its process: the command name and the shape
/// of its argv.
pub fn role(ev: &TraceEvent) -> Option<String> {
    match &ev.kind {
        EventKind::Exec { argv, .. } | EventKind::Attached { argv, .. } => {
            let args: Vec<String> = argv.iter().map(|a| shape(&a.value)).collect();
            Some(format!("{}: {}", ev.comm, args.join(" ")))
        }
        _ => None,
    }
}

/// Each process's role, from its last exec.
pub fn role_of(events: &[TraceEvent]) -> HashMap<u32, String> {
    events
        .iter()
        .filter_map(|ev| Some((ev.pid, role(ev)?)))
        .collect()
}

pub fn profile(events: &[TraceEvent]) -> Profile {
    let roles = role_of(events);
    let mut out = Profile::new();
    for ev in events {
        let (subject, outcome) = match &ev.kind {
            EventKind::Load(l) => {
                let class = l
                    .class
                    .map_or(String::new(), |c| format!(" [{}]", c.name()));
                (
                    format!("load {}", l.name),
                    format!("{}{class}", file_name(&l.path.value)),
                )
            }
            EventKind::Call(c) => {
                let name = c.name.as_ref().map_or("NULL", |n| file_name(&n.value));
                let outcome = match (c.ok, &c.failed_step) {
                    (Some(true), _) => "ok".to_string(),
                    (Some(false), Some(step)) => format!("failed ({step})"),
                    (Some(false), None) => "failed".to_string(),
                    (None, _) => "unfinished".to_string(),
                };
                (format!("{} {name}", c.func.name()), outcome)
            }
            EventKind::Api(a) => {
                let arg = a
                    .text
                    .as_ref()
                    .map_or(String::new(), |t| format!("({})", t.value));
                (format!("{}{arg}", a.function), a.result.clone())
            }
            _ => continue,
        };
        let role = roles
            .get(&ev.pid)
            .cloned()
            .unwrap_or_else(|| ev.comm.to_string());
        out.entry(role)
            .or_default()
            .entry(subject)
            .or_default()
            .insert(outcome);
    }
    out.entry(RUN.into())
        .or_default()
        .entry("verdict".into())
        .or_default()
        .insert(judge(events).outcome.name().into());
    out
}

#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Appeared {
        role: String,
        subject: String,
        outcomes: BTreeSet<String>,
    },
    Disappeared {
        role: String,
        subject: String,
        outcomes: BTreeSet<String>,
    },
    Changed {
        role: String,
        subject: String,
        before: BTreeSet<String>,
        after: BTreeSet<String>,
    },
}

pub fn diff(a: &Profile, b: &Profile) -> Vec<Change> {
    let empty = BTreeMap::new();
    let roles: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for role in roles {
        let (ra, rb) = (a.get(role).unwrap_or(&empty), b.get(role).unwrap_or(&empty));
        let subjects: BTreeSet<&String> = ra.keys().chain(rb.keys()).collect();
        for subject in subjects {
            let (role, subject_name) = (role.clone(), subject.clone());
            match (ra.get(subject), rb.get(subject)) {
                (Some(x), None) => out.push(Change::Disappeared {
                    role,
                    subject: subject_name,
                    outcomes: x.clone(),
                }),
                (None, Some(y)) => out.push(Change::Appeared {
                    role,
                    subject: subject_name,
                    outcomes: y.clone(),
                }),
                (Some(x), Some(y)) if x != y => out.push(Change::Changed {
                    role,
                    subject: subject_name,
                    before: x.clone(),
                    after: y.clone(),
                }),
                _ => {}
            }
        }
    }
    out
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(" | ")
}

/// One line per change, grouped under its role.
pub fn render(changes: &[Change]) -> String {
    let mut text = String::new();
    let mut last_role = "";
    for change in changes {
        let (role, line) = match change {
            Change::Appeared {
                role,
                subject,
                outcomes,
            } => (role, format!("  +  {subject}: {}", join(outcomes))),
            Change::Disappeared {
                role,
                subject,
                outcomes,
            } => (role, format!("  -  {subject}: {}", join(outcomes))),
            Change::Changed {
                role,
                subject,
                before,
                after,
            } => (
                role,
                format!("  ~  {subject}: {} → {}", join(before), join(after)),
            ),
        };
        if role != last_role {
            text += &format!("{role}\n");
            last_role = role;
        }
        text += &line;
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Load, TraceEvent};

    fn ev(pid: u32, kind: EventKind) -> TraceEvent {
        TraceEvent {
            ts_ns: pid as u64,
            pid,
            tid: pid,
            comm: "ollama".into(),
            depth: 0,
            kind,
        }
    }

    fn run(port: &str, lib: &str) -> Vec<TraceEvent> {
        let exec = EventKind::Exec {
            ppid: 1,
            filename: "/tmp/a-123/ollama".into(),
            argv: vec![
                "/tmp/a-123/ollama".into(),
                "runner".into(),
                "--port".into(),
                port.into(),
            ],
            argv_more: false,
            env: Vec::new(),
            container: None,
        };
        let load = Load::new(lib.into(), Vec::new(), None, 0x1000);
        vec![ev(10, exec), ev(10, EventKind::Load(load))]
    }

    #[test]
    fn pids_ports_and_dirs_do_not_matter_the_load_does() {
        let a = profile(&run("41000", "/tmp/x-1/opt/vgpu/lib/libcuda.so.1"));
        let same = profile(&run("52000", "/tmp/y-2/opt/vgpu/lib/libcuda.so.1"));
        assert!(diff(&a, &same).is_empty());
        let mut other = run("41000", "/usr/local/nvidia/lib64/libcuda.so.570.133.07");
        if let EventKind::Load(l) = &mut other[1].kind {
            l.name = "libcuda.so.1".into();
        }
        let changes = diff(&a, &profile(&other));
        assert_eq!(changes.len(), 1, "{changes:?}");
        let text = render(&changes);
        assert!(
            text.starts_with("ollama: ollama runner --port N\n"),
            "{text}"
        );
        assert!(
            text.contains("~  load libcuda.so.1: libcuda.so.1 → libcuda.so.570.133.07"),
            "{text}"
        );
    }
}
