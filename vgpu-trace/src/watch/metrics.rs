//! What `watch` tells Prometheus. Every label takes its value from a small fixed set (outcome,
//! role, library class, API function and result names), never a path, pid, argv or
//! environment: cardinality stays bounded and nothing private leaves the host. The records
//! name the paths.
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::{
    counter::{ConstCounter, Counter},
    family::Family,
    gauge::{ConstGauge, Gauge},
};
use prometheus_client::registry::Registry;

use super::passes::Role;
use crate::model::{Outcome, TraceEvent};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    outcome: &'static str,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadLabels {
    class: &'static str,
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    function: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

/// The metrics, and the registry that encodes them on each scrape.
pub struct Metrics {
    registry: Registry,
    passes: Family<PassLabels, Counter>,
    last_outcome: Family<OutcomeLabel, Gauge>,
    last_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    loads: Family<LoadLabels, Counter>,
    api_calls: Family<ApiLabels, Counter>,
    lost: Counter,
    followed: Gauge,
    backend: Family<BackendLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let passes = Family::<PassLabels, Counter>::default();
        registry.register(
            "vgpu_trace_passes",
            "GPU discovery passes, by the outcome of their verdict and the role of the process that ran them",
            passes.clone(),
        );
        let last_outcome = Family::<OutcomeLabel, Gauge>::default();
        registry.register(
            "vgpu_trace_last_pass_outcome",
            "1 for the outcome of the last discovery pass, 0 for the others",
            last_outcome.clone(),
        );
        let last_timestamp = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "vgpu_trace_last_pass_timestamp_seconds",
            "When the last discovery pass ended (unix time)",
            last_timestamp.clone(),
        );
        let loads = Family::<LoadLabels, Counter>::default();
        registry.register(
            "vgpu_trace_library_loads",
            "Libraries mapped by followed processes, by what the file is and the process's role",
            loads.clone(),
        );
        let api_calls = Family::<ApiLabels, Counter>::default();
        registry.register(
            "vgpu_trace_api_calls",
            "CUDA driver and NVML discovery calls, by function and result",
            api_calls.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "vgpu_trace_events_lost",
            "Events the kernel could not deliver (ring buffer full)",
            lost.clone(),
        );
        let followed = Gauge::default();
        registry.register(
            "vgpu_trace_followed_processes",
            "Processes followed now",
            followed.clone(),
        );
        let backend = Family::<BackendLabel, Gauge>::default();
        registry.register(
            "vgpu_trace_backend",
            "The backend tracing (1)",
            backend.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            passes,
            last_outcome,
            last_timestamp,
            loads,
            api_calls,
            lost,
            followed,
            backend,
        }
    }

    /// The text exposition (OpenMetrics), as served at /metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn backend(&self, name: &str) {
        let backend = match name {
            "ebpf" => "ebpf",
            "ptrace" => "ptrace",
            _ => "other",
        };
        self.backend.get_or_create(&BackendLabel { backend }).set(1);
    }

    pub fn followed(&self, n: usize) {
        self.followed.set(n as i64);
    }

    /// Counts what an event says: a load (by the role of its process, asked only then), a
    /// discovery call, lost records.
    pub fn event(&self, ev: &TraceEvent, role: impl FnOnce() -> Role) {
        use crate::model::EventKind;
        match &ev.kind {
            EventKind::Load(load) => {
                let class = load.class.map_or("unclassified", |c| c.name());
                self.loads
                    .get_or_create(&LoadLabels {
                        class,
                        role: role().name(),
                    })
                    .inc();
            }
            EventKind::Api(call) => {
                let (function, result) = api_labels(&call.function, call.code);
                self.api_calls
                    .get_or_create(&ApiLabels { function, result })
                    .inc();
            }
            EventKind::Lost { count } => {
                self.lost.inc_by(*count);
            }
            _ => {}
        }
    }

    /// A pass ended with `outcome` at `unix_s`.
    pub fn pass(&self, outcome: Outcome, role: Role, unix_s: f64) {
        self.passes
            .get_or_create(&PassLabels {
                outcome: outcome.name(),
                role: role.name(),
            })
            .inc();
        // Zeros first: between the two, a scrape sees no outcome at 1, never two.
        for other in Outcome::ALL {
            if other != outcome {
                self.last_outcome
                    .get_or_create(&OutcomeLabel {
                        outcome: other.name(),
                    })
                    .set(0);
            }
        }
        self.last_outcome
            .get_or_create(&OutcomeLabel {
                outcome: outcome.name(),
            })
            .set(1);
        self.last_timestamp.set(unix_s);
    }
}

/// A discovery call's labels: its function's name from the fixed list the probes know (else
/// `other`), and its result's name from the fixed tables (`CUDA_SUCCESS`,
/// `NVML_ERROR_NOT_FOUND`).
fn api_labels(function: &str, code: i32) -> (&'static str, &'static str) {
    match vgpu_trace_common::api::SPECS
        .iter()
        .find(|s| s.name == function)
    {
        Some(spec) if spec.nvml => (spec.name, crate::model::codes::nvml_return(code)),
        Some(spec) => (spec.name, crate::model::codes::cuda_result(code)),
        None => ("other", crate::model::codes::cuda_result(code)),
    }
}

/// The standard `process_*` metrics of the daemon itself, read from /proc/self at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(me) = SelfStat::read() else {
            return Ok(());
        };
        let gauges: [(&str, &str, f64); 4] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                me.rss_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                me.vsize_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                me.start_unix_s,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                me.open_fds as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let threads = ConstGauge::new(me.threads as i64);
        threads.encode(encoder.encode_descriptor(
            "process_threads",
            "Number of OS threads in the process",
            None,
            threads.metric_type(),
        )?)?;
        let cpu = ConstCounter::new(me.cpu_s);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        Ok(())
    }
}

/// What /proc/self says of the daemon.
struct SelfStat {
    rss_bytes: u64,
    vsize_bytes: u64,
    start_unix_s: f64,
    open_fds: usize,
    threads: u64,
    cpu_s: f64,
}

impl SelfStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may hold spaces and parentheses.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf reads a constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let boot_unix_s = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        Some(Self {
            cpu_s: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_unix_s: boot_unix_s + field(22)? as f64 / ticks,
            vsize_bytes: field(23)?,
            rss_bytes: field(24)? * page,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names_and_bounded_labels() {
        let m = Metrics::new();
        m.backend("ebpf");
        m.followed(3);
        m.pass(Outcome::InitFailed, Role::Serve, 1_796_576_462.0);
        let text = m.encode();
        for line in [
            "vgpu_trace_passes_total{outcome=\"init-failed\",role=\"serve\"} 1",
            "vgpu_trace_last_pass_outcome{outcome=\"init-failed\"} 1",
            "vgpu_trace_last_pass_outcome{outcome=\"shim-used\"} 0",
            "vgpu_trace_last_pass_timestamp_seconds 1796576462.0",
            "vgpu_trace_followed_processes 3",
            "vgpu_trace_backend{backend=\"ebpf\"} 1",
            "vgpu_trace_events_lost_total 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(api_labels("cuInit", 0), ("cuInit", "CUDA_SUCCESS"));
        assert_eq!(
            api_labels("nvmlInit_v2", 0),
            ("nvmlInit_v2", "NVML_SUCCESS")
        );
        assert_eq!(api_labels("/etc/passwd", 0).0, "other");
    }
}
