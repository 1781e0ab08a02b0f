//! Records of real CUDA stacks (PyTorch, nvidia-smi, the lab's pass-through on NVIDIA's driver,
//! the real Ollama on NVIDIA's driver and through the shims), made on a GPU machine and kept in
//! tests/data/real (the larger ones gzipped): their rules hold, and replaying each gives the
//! verdict the rules name. No GPU and no root needed.
use std::path::{Path, PathBuf};

mod common;
use common::*;

fn records() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real");
    let mut records: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".vgt") || name.ends_with(".vgt.gz")
        })
        .collect();
    records.sort();
    records
}

/// NAME.toml beside NAME.vgt or NAME.vgt.gz.
fn rules_of(record: &Path) -> PathBuf {
    let name = record.file_name().unwrap().to_string_lossy();
    let stem = name.trim_end_matches(".gz").trim_end_matches(".vgt");
    record.with_file_name(format!("{stem}.toml"))
}

#[test]
fn every_real_stack_record_holds_its_rules() {
    let records = records();
    assert_eq!(records.len(), 9, "{records:?}");
    for record in records {
        let rules = rules_of(&record);
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
        let rules = std::fs::read_to_string(rules_of(&record)).unwrap();
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
