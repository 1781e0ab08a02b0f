//! The kernel matrix of `cargo xtask test`: the workload `xtask/assets/vm-matrix.sh` on this
//! machine's own kernel and in QEMU on each Debian suite's, one table of what each got, and a
//! failure for any kernel where eBPF did not load, a program passed a tenth of the verifier's
//! budget, a verdict differs from the host's, or a count is not exact.
use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Suite, kernels};
use crate::workspace_root;

/// A tenth of the verifier's one-million-instruction budget.
const HEADROOM: u64 = 100_000;
/// dl-bench's loop, as the workload runs it.
const DL_ITERATIONS: u64 = 20_000;
/// The attach methods, as `VGPU_TRACE_ATTACH` names them.
const METHODS: [&str; 3] = [
    "uprobe-multi",
    "perf-event-cookie",
    "perf-event-per-function",
];

/// What one kernel's workload said, by key (the last value of a key wins).
pub struct Row {
    pub kernel: String,
    results: BTreeMap<String, String>,
}

impl Row {
    fn new(kernel: String, lines: &[(String, String)]) -> Self {
        Self {
            kernel,
            results: lines.iter().cloned().collect(),
        }
    }

    fn get(&self, key: &str) -> &str {
        self.results.get(key).map_or("", String::as_str)
    }

    fn num(&self, key: &str) -> Option<u64> {
        self.get(key).trim().parse().ok()
    }

    /// Runs the kernel skipped, by program, from a `PROGRAM:N ...` line.
    fn skipped(&self, key: &str) -> BTreeMap<String, u64> {
        self.get(key)
            .split_whitespace()
            .filter_map(|item| {
                let (program, n) = item.split_once(':')?;
                Some((program.to_string(), n.parse().ok()?))
            })
            .collect()
    }

    /// Skipped runs of the programs whose names start with one of `prefixes`.
    fn skipped_of(&self, key: &str, prefixes: &[&str]) -> u64 {
        self.skipped(key)
            .iter()
            .filter(|(p, _)| prefixes.iter().any(|x| p.starts_with(x)))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every skipped run of the row's sessions.
    fn skipped_total(&self) -> u64 {
        [
            "storm_skipped",
            "dl_skipped",
            "lab_healthy_skipped",
            "lab_shim-missing-symbols_skipped",
        ]
        .iter()
        .flat_map(|k| self.skipped(k).into_values())
        .sum()
    }

    fn json(&self, key: &str) -> Value {
        serde_json::from_str(self.get(key)).unwrap_or(Value::Null)
    }

    /// (program, instructions) the verifier worked hardest on, in a `doctor --kernel` report.
    fn worst(report: &Value) -> Option<(String, u64)> {
        report["programs"]
            .as_array()?
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    p["verified_insns"].as_u64()?,
                ))
            })
            .max_by_key(|(_, n)| *n)
    }

    /// The attach methods whose programs this kernel loaded, each with its largest count.
    fn methods(&self) -> Vec<(String, Option<(String, u64)>)> {
        METHODS
            .iter()
            .filter_map(|method| {
                let report = self.json(&format!("method_{method}"));
                (report["backend"] == "ebpf" && report["not_loaded"].is_null())
                    .then(|| (method.to_string(), Self::worst(&report)))
            })
            .collect()
    }

    /// The attach methods the kernel has (from its doctor report): each must load.
    fn supported(&self) -> Vec<&'static str> {
        let doctor = self.json("doctor");
        match (
            doctor["uprobe_multi"] == true,
            doctor["attach_cookie"] == true,
        ) {
            (true, _) => METHODS.to_vec(),
            (false, true) => METHODS[1..].to_vec(),
            (false, false) => METHODS[2..].to_vec(),
        }
    }

    /// What is wrong with this kernel's row, if anything: `host` is the native row.
    fn faults(&self, host: Option<&Row>) -> Vec<String> {
        let mut faults = Vec::new();
        let doctor = self.json("doctor");
        if doctor["backend"] != "ebpf" || !doctor["not_loaded"].is_null() {
            faults.push(format!(
                "eBPF not loaded: {}",
                doctor["not_loaded"]
                    .as_str()
                    .unwrap_or(self.get("doctor_stderr"))
            ));
        }
        let loaded = self.methods();
        for method in self.supported() {
            if !loaded.iter().any(|(m, _)| m == method) {
                faults.push(format!(
                    "{method}: not loaded (exit {}): {}",
                    self.get(&format!("method_{method}_exit")),
                    self.json(&format!("method_{method}"))["not_loaded"]
                ));
            }
        }
        let mut checked = loaded;
        checked.push((String::new(), Self::worst(&doctor)));
        for (method, worst) in checked {
            if let Some((program, n)) = worst
                && n > HEADROOM
            {
                faults.push(format!(
                    "{program} ({method}): {n} instructions > {HEADROOM}"
                ));
            }
        }
        for preset in ["healthy", "shim-missing-symbols"] {
            let key = format!("lab_{preset}");
            let want = host.map_or(
                match preset {
                    "healthy" => "shim-used",
                    _ => "missing-symbols",
                },
                |h| h.get(&key),
            );
            if self.get(&key) != want || self.get(&format!("{key}_exit")) != "0" {
                faults.push(format!(
                    "{preset}: verdict {:?}, exit {} (host: {want})",
                    self.get(&key),
                    self.get(&format!("{key}_exit"))
                ));
            }
        }
        let lost: u64 = ["storm_lost", "dl_lost"]
            .iter()
            .chain(&["lab_healthy_lost", "lab_shim-missing-symbols_lost"])
            .filter_map(|k| self.num(k))
            .sum();
        if lost > 0 {
            faults.push(format!("{lost} events lost"));
        }
        // Exact, or short by no more than the runs the kernel said it skipped of the programs
        // that see them (a skipped fork leaves its child unfollowed; a skipped exec, its exec).
        let exact = |seen: Option<u64>, truth: Option<u64>, skipped: u64| match (seen, truth) {
            (Some(seen), Some(truth)) => seen <= truth && truth - seen <= skipped,
            _ => false,
        };
        let storm_skips = self.skipped_of(
            "storm_skipped",
            &["sched_process_fork", "sched_process_exec"],
        );
        if !exact(self.num("storm_seen"), self.num("storm_truth"), storm_skips) {
            faults.push(format!(
                "storm: {} execs seen of {} ({storm_skips} fork/exec runs skipped)",
                self.get("storm_seen"),
                self.get("storm_truth")
            ));
        }
        let dl_skips = self.skipped_of("dl_skipped", &["dl_"]);
        let dl = [
            ("dlopen", DL_ITERATIONS + 1),
            ("dlsym", DL_ITERATIONS),
            ("dlclose", DL_ITERATIONS),
        ];
        for (func, want) in dl {
            if !exact(self.num(&format!("dl_{func}")), Some(want), dl_skips) {
                faults.push(format!(
                    "dl-bench: {} {func} seen of {want} ({dl_skips} dl runs skipped)",
                    self.get(&format!("dl_{func}"))
                ));
            }
        }
        faults
    }
}

/// The workload, on this machine (`/kit` read as the kit in target/kernels).
fn native(workload: &str) -> anyhow::Result<Row> {
    let kit = kernels::kernels_dir().join("kit");
    let script = workload.replace("/kit", &kit.display().to_string());
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(std::env::temp_dir())
        .output()
        .context("running the matrix workload here")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let release = nix_release();
    Ok(Row::new(
        format!("{release} (this machine)"),
        &super::qemu::results(&text),
    ))
}

fn nix_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Runs the matrix on `suites` and this machine, prints its table, and fails when a kernel's
/// row has faults.
pub fn check(suites: &[Suite], build: bool) -> anyhow::Result<()> {
    let workload = std::fs::read_to_string(workspace_root().join("xtask/assets/vm-matrix.sh"))
        .context("reading xtask/assets/vm-matrix.sh")?;
    let runs = super::matrix(suites, &workload, build)?;
    let host = native(&workload)?;
    let mut rows = vec![host];
    let mut broken = Vec::new();
    for run in runs {
        let row = Row::new(
            format!("{} ({})", run.release, run.suite.name()),
            &run.results,
        );
        if !run.done {
            broken.push(format!(
                "{}: {} (console: {})",
                row.kernel,
                if run.timed_out {
                    "timed out"
                } else {
                    "ended early"
                },
                run.log.display()
            ));
        }
        rows.push(row);
    }
    print_table(&rows);
    let host = &rows[0];
    for row in &rows {
        let reference = (!std::ptr::eq(row, host)).then_some(host);
        for fault in row.faults(reference) {
            broken.push(format!("{}: {fault}", row.kernel));
        }
    }
    if !broken.is_empty() {
        bail!("the kernel matrix failed:\n  {}", broken.join("\n  "));
    }
    println!(
        "xtask: kernel matrix: every kernel traced with eBPF, with the host's verdicts and exact counts"
    );
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("\nkernel matrix (xtask/assets/vm-matrix.sh; QEMU TCG but for this machine)\n");
    println!(
        "{:<40} {:<8} {:<24} {:<24} {:<10} {:<16} {:<11} {:<19} {:>4} {:>7}",
        "kernel",
        "backend",
        "attach method",
        "largest program",
        "healthy",
        "missing-symbols",
        "storm execs",
        "dl open/sym/close",
        "lost",
        "skipped"
    );
    for row in rows {
        let doctor = row.json("doctor");
        let worst =
            Row::worst(&doctor).map_or_else(|| "-".to_string(), |(p, n)| format!("{p} {n}"));
        let lost: u64 = [
            "storm_lost",
            "dl_lost",
            "lab_healthy_lost",
            "lab_shim-missing-symbols_lost",
        ]
        .iter()
        .filter_map(|k| row.num(k))
        .sum();
        println!(
            "{:<40} {:<8} {:<24} {:<24} {:<10} {:<16} {:<11} {:<19} {:>4} {:>7}",
            row.kernel,
            doctor["backend"].as_str().unwrap_or("?"),
            doctor["method"].as_str().unwrap_or("-"),
            worst,
            row.get("lab_healthy"),
            row.get("lab_shim-missing-symbols"),
            format!("{}/{}", row.get("storm_seen"), row.get("storm_truth")),
            format!(
                "{}/{}/{}",
                row.get("dl_dlopen"),
                row.get("dl_dlsym"),
                row.get("dl_dlclose")
            ),
            lost,
            row.skipped_total()
        );
    }
    let skips: Vec<String> = rows
        .iter()
        .filter(|r| r.skipped_total() > 0)
        .map(|r| {
            let all: Vec<String> = ["storm_skipped", "dl_skipped", "lab_healthy_skipped"]
                .iter()
                .map(|k| format!("{} {}", k.trim_end_matches("_skipped"), r.get(k).trim()))
                .filter(|t| t.contains(':'))
                .collect();
            format!("  {}: {}", r.kernel, all.join("; "))
        })
        .collect();
    if !skips.is_empty() {
        println!(
            "\nruns the kernel skipped (the program was already running on that CPU, preempted):\n{}",
            skips.join("\n")
        );
    }
    println!("\nevery attach method each kernel loaded, with its largest program:");
    for row in rows {
        let methods: Vec<String> = row
            .methods()
            .into_iter()
            .map(|(m, w)| match w {
                Some((p, n)) => format!("{m} ({p} {n})"),
                None => format!("{m} (no counts before 5.16)"),
            })
            .collect();
        println!("  {:<40} {}", row.kernel, methods.join(", "));
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        let lines: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Row::new("k".into(), &lines)
    }

    const GOOD: [(&str, &str); 14] = [
        (
            "doctor",
            r#"{"backend":"ebpf","method":"perf-event-per-function","not_loaded":null,"programs":[{"name":"a","verified_insns":10},{"name":"b","verified_insns":99}]}"#,
        ),
        (
            "method_perf-event-per-function",
            r#"{"backend":"ebpf","not_loaded":null,"programs":[{"name":"a","verified_insns":10}]}"#,
        ),
        ("lab_healthy", "shim-used"),
        ("lab_healthy_exit", "0"),
        ("lab_shim-missing-symbols", "missing-symbols"),
        ("lab_shim-missing-symbols_exit", "0"),
        ("storm_truth", "40"),
        ("storm_seen", "40"),
        ("storm_lost", "0"),
        ("dl_dlopen", "20001"),
        ("dl_dlsym", "20000"),
        ("dl_dlclose", "20000"),
        ("dl_lost", "0"),
        ("lab_healthy_lost", "0"),
    ];

    #[test]
    fn a_good_row_has_no_faults_and_each_fault_is_named() {
        assert_eq!(row(&GOOD).faults(None), Vec::<String>::new());
        assert_eq!(
            Row::worst(&row(&GOOD).json("doctor")),
            Some(("b".into(), 99))
        );
        let mut bad = GOOD.to_vec();
        bad[7] = ("storm_seen", "39");
        bad[11] = ("dl_dlclose", "19999");
        bad[0] = (
            "doctor",
            r#"{"backend":"ptrace","not_loaded":"the verifier refused x","programs":[]}"#,
        );
        bad[1] = ("method_perf-event-per-function", r#"{"backend":"ptrace"}"#);
        let faults = row(&bad).faults(None);
        assert_eq!(faults.len(), 4, "{faults:?}");
        assert!(faults[0].contains("the verifier refused x"));
        let host = row(&[
            ("lab_healthy", "cpu"),
            ("lab_shim-missing-symbols", "missing-symbols"),
        ]);
        assert!(row(&GOOD).faults(Some(&host))[0].contains("host: cpu"));
    }
}
