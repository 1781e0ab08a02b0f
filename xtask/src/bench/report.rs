//! The benchmark's rows: printed as a table grouped by topic, and written as JSON.
use serde_json::json;

pub struct Row {
    group: &'static str,
    what: String,
    /// Shown as is (e.g. "480 / 510 / 560 ms").
    shown: String,
    /// The figure compared with the target, in `unit`.
    value: f64,
    unit: &'static str,
    target: Option<&'static str>,
    /// How it was measured: the command or the baseline.
    how: String,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    #[allow(
        clippy::too_many_arguments,
        reason = "one row's fields, named at each call"
    )]
    pub fn add(
        &mut self,
        group: &'static str,
        what: impl Into<String>,
        shown: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: Option<&'static str>,
        how: impl Into<String>,
    ) {
        let row = Row {
            group,
            what: what.into(),
            shown: shown.into(),
            value,
            unit,
            target,
            how: how.into(),
        };
        eprintln!("xtask bench: {}: {}", row.what, row.shown);
        self.rows.push(row);
    }

    pub fn print(&self) {
        let mut group = "";
        for row in &self.rows {
            if row.group != group {
                group = row.group;
                println!("\n{group}");
            }
            let target = row.target.map(|t| format!("   (target {t})"));
            println!(
                "  {:<62} {}{}",
                row.what,
                row.shown,
                target.unwrap_or_default()
            );
        }
        println!("\nhow each figure was measured:");
        for row in &self.rows {
            println!("  {}: {}", row.what, row.how);
        }
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let rev = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "group": r.group,
                    "what": r.what,
                    "value": if r.value.is_finite() { json!(r.value) } else { json!(null) },
                    "unit": r.unit,
                    "shown": r.shown,
                    "target": r.target,
                    "how": r.how,
                })
            })
            .collect();
        Ok(serde_json::to_string_pretty(&json!({
            "kernel": kernel.trim(),
            "revision": rev,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "rows": rows,
        }))?)
    }
}
