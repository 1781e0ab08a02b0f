//! Expectations over a trace, for `vgpu-trace check`: what must appear (`[[expect]]`) and what
//! must not (`[[forbid]]`), each a load, dl* call or API call, optionally limited to a role and
//! narrowed by its outcome. A failed expectation is reported with the nearest evidence: the
//! same subject with another outcome, or nothing at all.
//!
//! ```toml
//! [[expect]]
//! verdict = "shim-used"         # the run's verdict (see `verdict::Outcome`)
//!
//! [[expect]]
//! role = "ollama runner"        # substring of the process role (comm and argv shape)
//! load = "libcuda.so.1"         # or dlopen = "...", dlsym = "...", api = "cuInit"
//! class = "shim"                # load: class; dlopen/dlsym: ok = true|false, step = "...";
//!                               # api: result = "CUDA_SUCCESS", values = { count = 1 },
//!                               #      text = "cuGetExportTable"
//! [[expect]]
//! log = "inference compute" # a line of the traced processes' output (Ollama's log) that
//!                           # contains this text
//!
//! [[forbid]]
//! load = "libnvidia-ml.so.1"
//! class = "nvidia-driver"
//! ```
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::diff::{role, role_of};
use super::verdict::judge;
use crate::model::{EventKind, TraceEvent, file_name};
use crate::model::{Outcome, Verdict};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub role: Option<String>,
    pub load: Option<String>,
    pub dlopen: Option<String>,
    pub dlsym: Option<String>,
    pub api: Option<String>,
    /// A line of output (Ollama's log) that contains this text.
    pub log: Option<String>,
    pub class: Option<String>,
    pub ok: Option<bool>,
    pub step: Option<String>,
    pub result: Option<String>,
    /// API rules: values the call wrote (`count`, `version`, ...), each compared exactly.
    pub values: Option<BTreeMap<String, u64>>,
    /// API rules: the call's string (the symbol asked of cuGetProcAddress, a device name).
    pub text: Option<String>,
    pub verdict: Option<String>,
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
            rule.validate()
                .map_err(|why| format!("rule {}: {why}", i + 1))?;
        }
        Ok(e)
    }
}

impl Rule {
    /// A rule written on one line, as `--until` takes it: `api=cuInit,result=CUDA_SUCCESS`,
    /// `verdict=shim-used`, `load=libcuda.so.1,class=shim`, `api=cuDeviceGetCount,count=1`,
    /// `log=inference compute`.
    /// Names that are not fields are API values.
    pub fn parse_inline(expr: &str) -> Result<Self, String> {
        const STRINGS: [&str; 11] = [
            "role", "load", "dlopen", "dlsym", "api", "log", "class", "step", "result", "text",
            "verdict",
        ];
        let mut table = toml::Table::new();
        let mut values = toml::Table::new();
        for pair in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
            let (key, value) = (key.trim(), value.trim());
            if STRINGS.contains(&key) {
                table.insert(key.into(), toml::Value::String(value.into()));
            } else if key == "ok" {
                let ok = value
                    .parse()
                    .map_err(|_| format!("ok={value}: say true or false"))?;
                table.insert(key.into(), toml::Value::Boolean(ok));
            } else {
                let n: i64 = value.parse().map_err(|_| {
                    format!("{key}={value}: unknown field, and not a number for an API value")
                })?;
                values.insert(key.into(), toml::Value::Integer(n));
            }
        }
        if !values.is_empty() {
            table.insert("values".into(), toml::Value::Table(values));
        }
        let rule: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        rule.validate()?;
        Ok(rule)
    }

    /// One subject, and only the outcome fields that subject has.
    fn validate(&self) -> Result<(), String> {
        let subjects = [
            ("load", self.load.is_some()),
            ("dlopen", self.dlopen.is_some()),
            ("dlsym", self.dlsym.is_some()),
            ("api", self.api.is_some()),
            ("log", self.log.is_some()),
            ("verdict", self.verdict.is_some()),
        ];
        let named: Vec<&str> = subjects.iter().filter(|s| s.1).map(|s| s.0).collect();
        let [subject] = named[..] else {
            return Err("name exactly one of load, dlopen, dlsym, api, log, verdict".into());
        };
        let fields = [
            ("class", self.class.is_some(), &["load"][..]),
            ("ok", self.ok.is_some(), &["dlopen", "dlsym"]),
            ("step", self.step.is_some(), &["dlopen"]),
            ("result", self.result.is_some(), &["api"]),
            ("values", self.values.is_some(), &["api"]),
            ("text", self.text.is_some(), &["api"]),
            (
                "role",
                self.role.is_some(),
                &["load", "dlopen", "dlsym", "api", "log"],
            ),
        ];
        for (field, given, applies) in fields {
            if given && !applies.contains(&subject) {
                return Err(format!("{field} does not apply to a {subject} rule"));
            }
        }
        if let Some(v) = &self.verdict
            && Outcome::parse(v).is_none()
        {
            let known: Vec<&str> = Outcome::ALL.iter().map(|o| o.name()).collect();
            return Err(format!(
                "unknown verdict {v:?} (known: {})",
                known.join(", ")
            ));
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("load", &self.load),
            ("dlopen", &self.dlopen),
            ("dlsym", &self.dlsym),
            ("api", &self.api),
            ("verdict", &self.verdict),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} {v}"));
            }
        }
        if let Some(text) = &self.log {
            parts.push(format!("log line containing {text:?}"));
        }
        for (k, v) in [
            ("class", &self.class),
            ("step", &self.step),
            ("result", &self.result),
            ("text", &self.text),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        for (k, v) in self.values.iter().flatten() {
            parts.push(format!("{k}={v}"));
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
            EventKind::Log(l) => self
                .log
                .as_deref()
                .is_some_and(|t| l.text.value.contains(t)),
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
            EventKind::Api(a) => {
                self.result.as_deref().is_none_or(|r| a.result == r)
                    && self
                        .text
                        .as_deref()
                        .is_none_or(|t| a.text.as_ref().is_some_and(|x| x.value == t))
                    && self
                        .values
                        .iter()
                        .flatten()
                        .all(|(k, v)| a.values.get(k) == Some(v))
            }
            // The subject is the whole of a log rule.
            EventKind::Log(_) => true,
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
        EventKind::Api(a) => {
            let arg = a.text.as_ref().map_or("", |t| t.value.as_str());
            let values: Vec<String> = a.values.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            format!("{}({arg}) = {}{}", a.function, a.result, values.concat())
        }
        EventKind::Log(l) => format!("log {:?}", l.text.value),
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

/// What the trace says about a rule: evidence about its subject whatever the outcome, and
/// evidence that matches it (at most five of each).
struct Seen {
    subject: Vec<String>,
    matching: Vec<String>,
}

fn seen(
    rule: &Rule,
    events: &[TraceEvent],
    roles: &HashMap<u32, String>,
    verdict: &Verdict,
) -> Seen {
    if let Some(wanted) = &rule.verdict {
        let line = format!("the verdict is {verdict}");
        let matching = match verdict.outcome.name() == wanted {
            true => vec![line.clone()],
            false => Vec::new(),
        };
        return Seen {
            subject: vec![line],
            matching,
        };
    }
    let role = |ev: &TraceEvent| {
        roles
            .get(&ev.pid)
            .cloned()
            .unwrap_or_else(|| ev.comm.to_string())
    };
    let about: Vec<(&TraceEvent, String)> = events
        .iter()
        .map(|ev| (ev, role(ev)))
        .filter(|(ev, role)| rule.subject(role, ev))
        .collect();
    let show = |(ev, role): &(&TraceEvent, String)| evidence(role, ev);
    Seen {
        subject: about.iter().take(5).map(show).collect(),
        matching: about
            .iter()
            .filter(|(ev, _)| rule.outcome(ev))
            .take(5)
            .map(show)
            .collect(),
    }
}

/// Watches a live timeline for the first event (or verdict) a rule matches: `--until`.
pub struct Watch {
    rule: Rule,
    roles: HashMap<u32, String>,
}

impl Watch {
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            roles: HashMap::new(),
        }
    }

    pub fn describe(&self) -> String {
        self.rule.describe()
    }

    /// Whether `ev`, or the verdict after it, is what the rule waits for.
    pub fn matches(&mut self, ev: &TraceEvent, verdict: impl FnOnce() -> Verdict) -> bool {
        if let Some(role) = role(ev) {
            self.roles.insert(ev.pid, role);
        }
        if let Some(wanted) = &self.rule.verdict {
            // Only these can change the verdict; the others need not recompute it.
            let relevant = matches!(
                ev.kind,
                EventKind::Load(_) | EventKind::Call(_) | EventKind::Api(_) | EventKind::Exit(_)
            );
            return relevant && verdict().outcome.name() == wanted;
        }
        let role = self.roles.get(&ev.pid).map_or(&*ev.comm, String::as_str);
        self.rule.subject(role, ev) && self.rule.outcome(ev)
    }
}

pub fn check(events: &[TraceEvent], e: &Expectations) -> Vec<Failure> {
    let roles = role_of(events);
    let verdict = judge(events);
    let mut failures = Vec::new();
    for rule in &e.expect {
        let seen = seen(rule, events, &roles, &verdict);
        if seen.matching.is_empty() {
            failures.push(Failure {
                rule: rule.describe(),
                forbidden: false,
                evidence: seen.subject,
            });
        }
    }
    for rule in &e.forbid {
        let seen = seen(rule, events, &roles, &verdict);
        if !seen.matching.is_empty() {
            failures.push(Failure {
                rule: rule.describe(),
                forbidden: true,
                evidence: seen.matching,
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

    #[test]
    fn one_line_rules_read_like_the_toml_ones() {
        let r = Rule::parse_inline("api=cuDeviceGetCount, result=CUDA_SUCCESS, count=1").unwrap();
        assert_eq!(r.api.as_deref(), Some("cuDeviceGetCount"));
        assert_eq!(r.values.unwrap().get("count"), Some(&1));
        let r = Rule::parse_inline("dlopen=libggml-cuda.so,ok=false").unwrap();
        assert_eq!(r.ok, Some(false));
        assert!(Rule::parse_inline("verdict=shim-used").is_ok());
        let r = Rule::parse_inline("log=library=cpu").unwrap();
        assert_eq!(
            r.log.as_deref(),
            Some("library=cpu"),
            "only the first = splits"
        );
        for bad in [
            "log=x,result=CUDA_SUCCESS",
            "",
            "api",
            "verdict=great",
            "ok=maybe,dlopen=x",
            "load=x,result=CUDA_SUCCESS",
            "api=cuInit,colour=red",
            "api=cuInit,count=-1",
        ] {
            assert!(Rule::parse_inline(bad).is_err(), "{bad:?} was taken");
        }
        assert!(
            Rule::parse_inline("verdict=great")
                .unwrap_err()
                .contains("shim-used")
        );
    }

    #[test]
    fn log_rules_match_a_line_that_contains_their_text() {
        use crate::model::{LogLine, Stream};
        let line = |text: &str| TraceEvent {
            ts_ns: 1,
            pid: 7,
            tid: 7,
            comm: "ollama".into(),
            depth: 0,
            kind: EventKind::Log(LogLine {
                stream: Stream::Stderr,
                text: text.into(),
                ollama: None,
            }),
        };
        let ollama = [
            line("msg=\"discovering available GPUs...\""),
            line("msg=\"inference compute\" id=cpu library=cpu"),
        ];
        let mut watch = Watch::new(Rule::parse_inline("log=inference compute").unwrap());
        let fired: Vec<bool> = ollama
            .iter()
            .map(|ev| watch.matches(ev, || unreachable!("a log rule needs no verdict")))
            .collect();
        assert_eq!(fired, [false, true]);
        let rules = Expectations::parse("[[expect]]\nlog = \"library=cuda\"\n").unwrap();
        let text = report(&check(&ollama, &rules));
        assert!(
            text.contains(
                "FAIL  expected: log line containing \"library=cuda\"\n      nearest: nothing"
            ),
            "{text}"
        );
    }

    #[test]
    fn verdict_and_value_rules_hold_or_report() {
        use crate::model::ApiCall;
        let ev = TraceEvent {
            ts_ns: 1,
            pid: 9,
            tid: 9,
            comm: "ollama".into(),
            depth: 0,
            kind: EventKind::Api(ApiCall {
                function: "cuDeviceGetCount".into(),
                code: 0,
                result: "CUDA_SUCCESS".into(),
                values: [("count".to_string(), 2)].into(),
                text: None,
            }),
        };
        let rules = Expectations::parse(
            "[[expect]]\nverdict = \"other-driver\"\n[[expect]]\napi = \"cuDeviceGetCount\"\nvalues = { count = 2 }\n",
        )
        .unwrap();
        let failures = check(std::slice::from_ref(&ev), &rules);
        assert!(failures.is_empty(), "{}", report(&failures));
        let rules = Expectations::parse(
            "[[expect]]\nverdict = \"shim-used\"\n[[expect]]\napi = \"cuDeviceGetCount\"\nvalues = { count = 1 }\n[[forbid]]\nverdict = \"other-driver\"\n",
        )
        .unwrap();
        let text = report(&check(std::slice::from_ref(&ev), &rules));
        assert!(
            text.contains(
                "FAIL  expected: verdict shim-used\n      nearest: the verdict is other-driver: "
            ),
            "{text}"
        );
        assert!(
            text.contains("nearest: cuDeviceGetCount() = CUDA_SUCCESS count=2 (pid 9, ollama)"),
            "{text}"
        );
        assert!(
            text.contains(
                "FAIL  forbidden: verdict other-driver\n      seen: the verdict is other-driver"
            ),
            "{text}"
        );
        assert!(
            Expectations::parse("[[expect]]\nverdict = \"shim-used\"\nrole = \"x\"\n").is_err()
        );
    }
}
