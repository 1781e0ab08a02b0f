//! The compact view a person sees on a terminal, held against golden files: real-stack records
//! replayed with `--view compact`, times and pids redacted. `UPDATE_GOLDEN=1` rewrites the
//! golden files (then read the diff). `-q` gives the verdict alone; `-v` every event.
use std::path::Path;

mod common;
use common::*;

fn replay(record: &Path, args: &[&str]) -> String {
    let out = tracer()
        .arg("replay")
        .arg(record)
        .args(["--color", "never"])
        .args(args)
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `  0.13     [596] cuInit…` → `   T     [PID] cuInit…`.
fn redact(view: &str) -> String {
    view.lines()
        .map(|line| {
            let Some((time, rest)) = line.split_once(" [").filter(|(t, _)| {
                t.trim().split_once('.').is_some_and(|(a, b)| {
                    a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit())
                })
            }) else {
                return line.to_string();
            };
            let Some((_, rest)) = rest.split_once("] ") else {
                return line.to_string();
            };
            // The indentation (tree depth) sits after the time column.
            let indent = time.len() - time.trim_end().len();
            let time = time.trim_end();
            format!(
                "{:>width$}{} [PID] {rest}",
                "T",
                " ".repeat(indent),
                width = time.len()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn the_compact_view_of_real_stacks_matches_its_golden_files() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in ["passthrough-b", "passthrough-c", "nvidia-smi-L"] {
        let view = redact(&replay(
            &data.join(format!("real/{name}.vgt")),
            &["--view", "compact"],
        ));
        let golden = data.join(format!("golden/{name}.txt"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &view).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(
            view, want,
            "{name}: the compact view changed (UPDATE_GOLDEN=1 to accept)"
        );
        for line in view.lines() {
            assert!(line.chars().count() <= 120, "{name}: too wide: {line}");
        }
    }
}

#[test]
fn quiet_gives_the_verdict_and_verbose_every_event() {
    let record = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real/passthrough-b.vgt");
    let quiet = replay(&record, &["-q"]);
    assert_eq!(quiet.lines().count(), 1, "{quiet}");
    assert!(quiet.starts_with("verdict: shim-used: "), "{quiet}");
    let compact = replay(&record, &["--view", "compact"]).lines().count();
    let full = replay(&record, &["-v", "--view", "auto"]).lines().count();
    assert!(full > 3 * compact, "full {full} lines, compact {compact}");
}
