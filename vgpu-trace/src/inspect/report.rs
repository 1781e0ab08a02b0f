//! Printing doctor and resolve results: text for people, JSON for machines.
use std::io::Write as _;

use serde::Serialize;

use super::kernel::KernelReport;
use crate::doctor::{Check, Ollama, Report, Status};
use crate::loader::ldso::{Resolution, Verdict};
use crate::model::Class;
use crate::sanitize::plain;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn doctor(
    report: &Report,
    ollama: Option<&Ollama>,
    kernel: Option<&KernelReport>,
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        #[derive(Serialize)]
        struct Json<'a> {
            passed: bool,
            ollama: Option<&'a str>,
            #[serde(flatten)]
            report: &'a Report,
            kernel: Option<&'a KernelReport>,
        }
        let json = Json {
            passed: report.passed(),
            ollama: ollama.map(|o| o.exe.as_str()),
            report,
            kernel,
        };
        out(&(serde_json::to_string_pretty(&json)? + "\n"))?;
        return Ok(());
    }
    let mut text = String::new();
    match ollama {
        Some(o) => {
            text += &format!(
                "Ollama: {} (libraries in {})\n",
                plain(&o.exe),
                plain(&o.lib_dir)
            )
        }
        None => {
            text +=
                "Ollama: not found (checked PATH, /usr/local/bin, /usr/bin; use --ollama PATH)\n"
        }
    }
    for check in &report.checks {
        text += &check_text(check);
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    text += &match failed {
        0 => format!("{} checks passed\n", report.checks.len()),
        n => format!("{n} of {} checks failed\n", report.checks.len()),
    };
    out(&text)?;
    Ok(())
}

fn check_text(check: &Check) -> String {
    let status = match check.status {
        Status::Pass => "PASS",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
    };
    let mut text = format!("{status}  {:<13} {}\n", check.id, plain(&check.summary));
    for line in &check.evidence {
        text += &format!("      {}\n", plain(line));
    }
    if let Some(fix) = &check.fix {
        text += &format!("      fix: {}\n", plain(fix));
    }
    text
}

/// `doctor --kernel`: the kernel section, and each program's load.
pub fn kernel(kernel: &KernelReport, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        out(&(serde_json::to_string_pretty(kernel)? + "\n"))?;
        return Ok(());
    }
    let mut text = check_text(&kernel.check());
    if !kernel.programs.is_empty() {
        text += &format!(
            "      {:<28} {:>12} {:>9}\n",
            "program", "instructions", "load"
        );
        for p in &kernel.programs {
            let insns = p
                .verified_insns
                .map_or_else(|| "-".to_string(), |n| n.to_string());
            text += &format!(
                "      {:<28} {:>12} {:>6.1} ms\n",
                p.name,
                insns,
                p.micros as f64 / 1000.0
            );
        }
    }
    out(&text)?;
    Ok(())
}

pub fn resolve(r: &Resolution, class: Option<Class>, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        #[derive(Serialize)]
        struct Candidate<'a> {
            path: &'a str,
            origin: String,
            verdict: String,
        }
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            winner: Option<&'a str>,
            class: Option<Class>,
            candidates: Vec<Candidate<'a>>,
        }
        let candidates = r
            .candidates
            .iter()
            .map(|c| Candidate {
                path: &c.path,
                origin: c.origin.describe(),
                verdict: verdict(&c.verdict),
            })
            .collect();
        let json = Json {
            name: &r.name,
            winner: r.winner().map(|w| w.path.as_str()),
            class,
            candidates,
        };
        out(&(serde_json::to_string_pretty(&json)? + "\n"))?;
        return Ok(());
    }
    let mut text = String::new();
    for (i, c) in r.candidates.iter().enumerate() {
        text += &format!(
            "{:>3}. {:<60} {:<28} {}\n",
            i + 1,
            plain(&c.path),
            plain(&c.origin.describe()),
            verdict(&c.verdict)
        );
    }
    text += &match (r.winner(), class) {
        (Some(w), Some(class)) => format!(
            "{} -> {} [{}]\n",
            plain(&r.name),
            plain(&w.path),
            class.name()
        ),
        _ => format!(
            "{}: not found ({} candidates tried)\n",
            plain(&r.name),
            r.candidates.len()
        ),
    };
    out(&text)?;
    Ok(())
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Chosen => "LOADED".into(),
        Verdict::Missing => "no such file".into(),
        Verdict::Rejected(why) => format!("skipped: {why}"),
    }
}
