//! Records of real CUDA stacks (PyTorch, nvidia-smi, the lab's pass-through on NVIDIA's driver),
//! made on a GPU machine and kept in tests/data/real: their rules hold, and replaying each gives
//! the verdict the rules name. No GPU and no root needed.
use std::path::{Path, PathBuf};

mod common;
use common::*;

fn records() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real");
    let mut records: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vgt"))
        .collect();
    records.sort();
    records
}

#[test]
fn every_real_stack_record_holds_its_rules() {
    let records = records();
    assert_eq!(records.len(), 5, "{records:?}");
    for record in records {
        let rules = record.with_extension("toml");
        let out = tracer()
            .arg("check")
            .arg(&record)
            .arg("--expect")
            .arg(&rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            record.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn replaying_a_real_stack_record_gives_its_verdict() {
    for record in records() {
        let rules = std::fs::read_to_string(record.with_extension("toml")).unwrap();
        let verdict = rules
            .lines()
            .find_map(|l| l.strip_prefix("verdict = "))
            .expect("a verdict rule")
            .trim_matches('"');
        let out = tracer().arg("replay").arg(&record).output().unwrap();
        assert!(out.status.success(), "{}: {out:?}", record.display());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("verdict: {verdict}: ")),
            "{}: {stdout}",
            record.display()
        );
    }
}
