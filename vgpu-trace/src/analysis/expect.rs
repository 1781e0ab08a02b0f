//! Expectations over a trace, for `vgpu-trace check`: what must appear (`[[expect]]`) and what
//! must not (`[[forbid]]`), each a load, dl* call or API call, optionally limited to a role and
//! narrowed by its outcome. A failed expectation is reported with the nearest evidence: the
//! same subject with another outcome, or nothing at all.
//!
//! ```toml
//! [[expect]]
//! role = "ollama runner"        # substring of the process role (comm and argv shape)
//! load = "libcuda.so.1"         # or dlopen = "...", dlsym = "...", api = "cuInit"
//! class = "shim"                # load: class; dlopen/dlsym: ok = true|false, step = "...";
//!                               # api: result = "CUDA_SUCCESS"
//! [[forbid]]
//! load = "libnvidia-ml.so.1"
//! class = "nvidia-driver"
//! ```
use serde::Deserialize;

use super::diff::role_of;
use crate::model::{EventKind, TraceEvent, file_name};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub role: Option<String>,
    pub load: Option<String>,
    pub dlopen: Option<String>,
    pub dlsym: Option<String>,
    pub api: Option<String>,
    pub class: Option<String>,
    pub ok: Option<bool>,
    pub step: Option<String>,
    pub result: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    #[serde(default)]
    pub expect: Vec<Rule>,
    #[serde(default)]
    pub forbid: Vec<Rule>,
}

impl Expectations {
    pub fn parse(text: &str) -> Result<Self, String> {
        let e: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, rule) in e.expect.iter().chain(&e.forbid).enumerate() {
            let subjects = [&rule.load, &rule.dlopen, &rule.dlsym, &rule.api]
                .iter()
                .filter(|s| s.is_some())
                .count();
            if subjects != 1 {
                return Err(format!(
                    "rule {}: name exactly one of load, dlopen, dlsym, api",
                    i + 1
                ));
            }
        }
        Ok(e)
    }
}

impl Rule {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("load", &self.load),
            ("dlopen", &self.dlopen),
            ("dlsym", &self.dlsym),
            ("api", &self.api),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
        for (k, v) in [
            ("class", &self.class),
            ("step", &self.step),
            ("result", &self.result),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        if let Some(ok) = self.ok {
            parts.push(format!("ok={ok}"));
        }
        if let Some(role) = &self.role {
            parts.push(format!("(role: {role})"));
        }
        parts.join(" ")
    }

    /// Whether the event is about this rule's subject (role and name), whatever its outcome.
    fn subject(&self, role: &str, ev: &TraceEvent) -> bool {
        if self.role.as_deref().is_some_and(|r| !role.contains(r)) {
            return false;
        }
        match &ev.kind {
            EventKind::Load(l) => self.load.as_deref() == Some(l.name.as_str()),
            EventKind::Call(c) => {
                let name = c.name.as_ref().map(|n| file_name(&n.value));
                match c.func.name() {
                    "dlopen" | "dlmopen" => self.dlopen.is_some() && self.dlopen.as_deref() == name,
                    "dlsym" | "dlvsym" => self.dlsym.is_some() && self.dlsym.as_deref() == name,
                    _ => false,
                }
            }
            EventKind::Api(a) => self.api.as_deref() == Some(a.function.as_str()),
            _ => false,
        }
    }

    fn outcome(&self, ev: &TraceEvent) -> bool {
        match &ev.kind {
            EventKind::Load(l) => self
                .class
                .as_deref()
                .is_none_or(|c| l.class.is_some_and(|k| k.name() == c)),
            EventKind::Call(c) => {
                self.ok.is_none_or(|ok| c.ok == Some(ok))
                    && self
                        .step
                        .as_ref()
                        .is_none_or(|s| c.failed_step.as_ref() == Some(s))
            }
            EventKind::Api(a) => self.result.as_deref().is_none_or(|r| a.result == r),
            _ => false,
        }
    }
}

/// One line of evidence for a report.
fn evidence(role: &str, ev: &TraceEvent) -> String {
    let what = match &ev.kind {
        EventKind::Load(l) => format!(
            "load {} -> {} [{}]",
            l.name,
            l.path.value,
            l.class.map_or("?", |c| c.name())
        ),
        EventKind::Call(c) => format!(
            "{}({}) ok={} {}",
            c.func.name(),
            c.name.as_ref().map_or("NULL", |n| n.value.as_str()),
            c.ok.map_or("unfinished".into(), |o| o.to_string()),
            c.error
                .as_ref()
                .map_or(String::new(), |e| format!("dlerror: {}", e.value))
        ),
        EventKind::Api(a) => format!("{}() = {}", a.function, a.result),
        _ => String::new(),
    };
    format!("{what} (pid {}, {role})", ev.pid)
}

#[derive(Debug)]
pub struct Failure {
    pub rule: String,
    pub forbidden: bool,
    /// Matching events for a forbid; same-subject events for an expect.
    pub evidence: Vec<String>,
}

pub fn check(events: &[TraceEvent], e: &Expectations) -> Vec<Failure> {
    let roles = role_of(events);
    let role = |ev: &TraceEvent| {
        roles
            .get(&ev.pid)
            .cloned()
            .unwrap_or_else(|| ev.comm.clone())
    };
    let mut failures = Vec::new();
    for rule in &e.expect {
        let same: Vec<&TraceEvent> = events
            .iter()
            .filter(|ev| rule.subject(&role(ev), ev))
            .collect();
        if !same.iter().any(|ev| rule.outcome(ev)) {
            let evidence = same
                .iter()
                .take(5)
                .map(|ev| evidence(&role(ev), ev))
                .collect();
            failures.push(Failure {
                rule: rule.describe(),
                forbidden: false,
                evidence,
            });
        }
    }
    for rule in &e.forbid {
        let hits: Vec<String> = events
            .iter()
            .filter(|ev| rule.subject(&role(ev), ev) && rule.outcome(ev))
            .take(5)
            .map(|ev| evidence(&role(ev), ev))
            .collect();
        if !hits.is_empty() {
            failures.push(Failure {
                rule: rule.describe(),
                forbidden: true,
                evidence: hits,
            });
        }
    }
    failures
}

pub fn report(failures: &[Failure]) -> String {
    let mut text = String::new();
    for f in failures {
        if f.forbidden {
            text += &format!("FAIL  forbidden: {}\n", f.rule);
            for e in &f.evidence {
                text += &format!("      seen: {e}\n");
            }
        } else {
            text += &format!("FAIL  expected: {}\n", f.rule);
            match f.evidence.is_empty() {
                true => text += "      nearest: nothing about this subject in the trace\n",
                false => {
                    for e in &f.evidence {
                        text += &format!("      nearest: {e}\n");
                    }
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_expectations_are_errors() {
        assert!(
            Expectations::parse("[[expect]]\nload = \"libcuda.so.1\"\napi = \"cuInit\"\n").is_err()
        );
        assert!(Expectations::parse("[[expect]]\nclass = \"shim\"\n").is_err());
        assert!(Expectations::parse("[[expect]]\nload = \"x\"\ncolour = \"red\"\n").is_err());
        assert!(Expectations::parse("not toml [").is_err());
        let e = Expectations::parse("[[forbid]]\napi = \"cuInit\"\n").unwrap();
        assert_eq!((e.expect.len(), e.forbid.len()), (0, 1));
        assert!(check(&[], &e).is_empty(), "nothing seen, nothing forbidden");
        let e = Expectations::parse("[[expect]]\napi = \"cuInit\"\n").unwrap();
        let failures = check(&[], &e);
        assert_eq!(failures.len(), 1);
        assert!(report(&failures).contains("nearest: nothing about this subject"));
    }
}
