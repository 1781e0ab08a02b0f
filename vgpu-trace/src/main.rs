//! The `vgpu-trace` command line.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use vgpu_trace::commands;
use vgpu_trace::failure::{self, FailAs as _, Failure};
use vgpu_trace::inspect::{self, DoctorOptions, ResolveOptions};
use vgpu_trace::judge::expect::Rule;
use vgpu_trace::loader::shims::SHIMS_CONFIG;
use vgpu_trace::session::{
    self, BackendChoice, Config, Target, cgroup::CgroupSpec, logfile::LogSource,
};
use vgpu_trace::sink::{ColorChoice, Format, Outputs, View};

/// Trace which shared libraries a process tree asks for and gets (dlopen, dlsym, dlerror,
/// exec, fork, exit), live from the kernel.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    /// Every event on the timeline, not the compact view (-v), and more diagnostics on stderr
    /// (-v info, -vv debug, -vvv trace; RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Colour the timeline.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// How much of the timeline to show: compact on a terminal and full otherwise (auto), one
    /// line per decision that matters (compact), every event (full), the verdict (quiet).
    #[arg(long, global = true, value_enum, default_value_t = View::Auto)]
    view: View,
    /// Only the verdict (--view quiet).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The ptrace backend's engine, started by a session (not for users).
    #[command(hide = true, name = "ptrace-engine")]
    PtraceEngine {
        /// The arguments are pids to seize, not a command to start.
        #[arg(long)]
        attach: bool,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell), e.g.
    /// `vgpu-trace completions bash > /etc/bash_completion.d/vgpu-trace`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages, vgpu-trace.1 and one per subcommand, into DIR (for packagers).
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// Start a command and trace it and everything it starts.
    Run {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        shims: ShimArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Trace running processes (by pid or name) and everything they start from now on.
    Attach {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        shims: ShimArgs,
        /// Trace every process on the machine instead of named targets.
        #[arg(long, conflicts_with_all = ["targets", "unit", "cgroup"])]
        all: bool,
        #[command(flatten)]
        follow: FollowArgs,
        #[command(flatten)]
        stop: StopArgs,
        /// Process ids or names (comm, executable or argv[0] file name), e.g. `ollama`.
        #[arg(
            value_name = "PID|NAME",
            required_unless_present_any = ["all", "unit", "cgroup"],
            conflicts_with_all = ["unit", "cgroup"]
        )]
        targets: Vec<String>,
    },
    /// Follow Ollama (a unit, a cgroup, process names, or everything) until stopped, judge each
    /// GPU discovery pass, keep a record of each that did not end on the shim (and of the last
    /// that did), and serve Prometheus metrics. For a daemon: see vgpu-trace-watch.service.
    Watch {
        #[command(flatten)]
        shims: ShimArgs,
        /// Watch every process on the machine instead of named targets.
        #[arg(long, conflicts_with_all = ["targets", "unit", "cgroup"])]
        all: bool,
        #[command(flatten)]
        follow: FollowArgs,
        /// Where records are kept (created 0700; each file 0600).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/vgpu-trace")]
        records: PathBuf,
        /// Records kept at most (the oldest go first; the last healthy one stays).
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
        keep: u64,
        /// Total size of the records at most (suffixes K, M, G).
        #[arg(long, value_name = "BYTES", default_value = "200M", value_parser = parse_size)]
        max_size: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics. Loopback unless another address
        /// is given here.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464", value_parser = parse_listen)]
        metrics: std::net::SocketAddr,
        /// A discovery pass with nothing new for this long is over (it also ends when its
        /// first process exits, or once Ollama states its conclusion).
        #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_gap)]
        pass_gap: std::time::Duration,
        /// Kernel ring buffer size in bytes (as for run).
        #[arg(long, value_name = "BYTES", default_value = RING_DEFAULT, value_parser = parse_ring_size)]
        ring_size: u32,
        /// Never pause a traced process to arm API probes (as for run).
        #[arg(long)]
        no_stop: bool,
        /// Stop after this long (for tests and trials; a daemon runs until stopped).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Process ids or names (comm, executable or argv[0] file name), e.g. `ollama`; a name
        /// is also followed in each process that starts with it later (at most 4 names).
        #[arg(
            value_name = "PID|NAME",
            required_unless_present_any = ["all", "unit", "cgroup"],
            conflicts_with_all = ["unit", "cgroup"]
        )]
        targets: Vec<String>,
    },
    /// Trace a command (or running processes) into a JSON Lines record, showing the timeline.
    Record {
        /// The record (JSON Lines, mode 0600, flushed after each batch of events).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        shims: ShimArgs,
        /// Kernel ring buffer size in bytes (as for run).
        #[arg(long, value_name = "BYTES", default_value = RING_DEFAULT, value_parser = parse_ring_size)]
        ring_size: u32,
        /// Never pause a traced process to arm API probes (as for run).
        #[arg(long)]
        no_stop: bool,
        /// What traces (as for run); `--all` needs eBPF.
        #[arg(long, value_enum, env = "VGPU_TRACE_BACKEND", default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Also write a Chrome trace (ui.perfetto.dev, chrome://tracing) here.
        #[arg(long, value_name = "FILE")]
        perfetto: Option<PathBuf>,
        #[command(flatten)]
        stop: StopArgs,
        /// Attach to these pids or names instead of starting a command.
        #[arg(
            long,
            value_name = "PID|NAME",
            num_args = 1..,
            conflicts_with_all = ["cmd", "unit", "cgroup"]
        )]
        attach: Vec<String>,
        #[command(flatten)]
        follow: FollowArgs,
        /// The command and its arguments.
        #[arg(
            last = true,
            value_name = "CMD",
            required_unless_present_any = ["attach", "unit", "cgroup"],
            conflicts_with_all = ["unit", "cgroup"]
        )]
        cmd: Vec<String>,
    },
    /// Show a record's timeline again, from the file alone (no root needed).
    Replay {
        /// A record written by `record` or `run --format jsonl`.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also write a Chrome trace (ui.perfetto.dev, chrome://tracing) here.
        #[arg(long, value_name = "FILE")]
        perfetto: Option<PathBuf>,
    },
    /// Hold a record against expectations (TOML: [[expect]] and [[forbid]] rules). Exit 0 when
    /// all hold, 1 with a report of each failure and the nearest evidence, 2 for a bad file.
    Check {
        file: PathBuf,
        #[arg(long, value_name = "TOML")]
        expect: PathBuf,
    },
    /// Compare two records, ignoring pids, times and addresses: loads, classes, dl* results
    /// and API return codes that appeared, disappeared or changed. Exit 0 when none did.
    Diff { before: PathBuf, after: PathBuf },
    /// Check a CUDA/NVML shim installation as ld.so and Ollama will see it; exit 0 only when
    /// every check passes.
    Doctor {
        /// Only the kernel: the backend and attach method it gets and why, what its BPF lacks,
        /// and (as root) each program loaded and attached as a session would, with the
        /// verifier's instruction count. Exit 0 when sessions get eBPF.
        #[arg(long)]
        kernel: bool,
        #[command(flatten)]
        view: ViewArgs,
        #[command(flatten)]
        shims: ShimArgs,
        /// The ollama binary (default: the process itself, `ollama` on PATH, /usr/local/bin, /usr/bin).
        #[arg(long, value_name = "PATH")]
        ollama: Option<String>,
        #[arg(long, value_enum, default_value_t = inspect::Format::Text)]
        format: inspect::Format,
    },
    /// Which file a library name resolves to for a process, every candidate in ld.so's order.
    Resolve {
        /// A library name as passed to dlopen or listed in DT_NEEDED, e.g. libcuda.so.1.
        name: String,
        #[command(flatten)]
        view: ViewArgs,
        /// The object doing the loading (its RPATH/RUNPATH count); default: the process's executable.
        #[arg(long, value_name = "PATH")]
        exe: Option<String>,
        #[command(flatten)]
        shims: ShimArgs,
        #[arg(long, value_enum, default_value_t = inspect::Format::Text)]
        format: inspect::Format,
    },
}

/// Whose view of the file system and environment.
#[derive(Args)]
struct ViewArgs {
    /// A running process: its root (/proc/PID/root), environment, executable and mapped libraries.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// A root directory to look in instead of / (an image, a container's root).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Set an environment variable for the check, e.g. --env LD_LIBRARY_PATH=/opt/vgpu/lib.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
}

/// When `attach` and `record` stop, beside Ctrl-C and the end of what they trace.
#[derive(Args)]
struct StopArgs {
    /// Stop tracing after this long (e.g. 30s, 2m); a started command keeps running.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    duration: Option<std::time::Duration>,
    /// Stop tracing once an event or the verdict matches this rule, written as `check`
    /// rules are, on one line: `api=cuInit,result=CUDA_SUCCESS`, `verdict=shim-used`,
    /// `load=libcuda.so.1,class=shim`, `dlopen=libggml-cuda.so,ok=false`,
    /// `log=inference compute` (Ollama's conclusion). With --duration, whichever comes
    /// first.
    #[arg(long, value_name = "EXPR", value_parser = parse_until)]
    until: Option<Box<Rule>>,
}

/// What `attach` and `record` follow beside pids: a service's cgroup, and logs.
#[derive(Args)]
struct FollowArgs {
    /// Follow a systemd unit's processes (its cgroup), across restarts, e.g. `ollama.service`.
    #[arg(long, value_name = "NAME", conflicts_with = "cgroup")]
    unit: Option<String>,
    /// Follow every process of a cgroup (v2), across restarts: its path in the hierarchy
    /// (`/system.slice/ollama.service`) or on disk.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// Also follow this log file (Ollama's, where its service writes one): its last MiB,
    /// then what is added. Repeatable.
    #[arg(long = "log", value_name = "FILE")]
    logs: Vec<PathBuf>,
    /// Also follow this unit's journal: its last thousand lines, then what is added.
    #[arg(long = "journal", value_name = "UNIT")]
    journals: Vec<String>,
}

impl FollowArgs {
    /// The cgroup to follow, if one was named.
    fn cgroup(&self) -> Option<Target> {
        match (&self.unit, &self.cgroup) {
            (Some(unit), _) => Some(Target::Cgroup(CgroupSpec::Unit(unit.clone()))),
            (_, Some(path)) => Some(Target::Cgroup(CgroupSpec::Path(path.clone()))),
            _ => None,
        }
    }

    /// What `attach` and `watch` follow: everything (`--all`), a cgroup, or pids and names.
    fn target(&self, all: bool, targets: Vec<String>) -> Target {
        match self.cgroup() {
            _ if all => Target::System,
            Some(cgroup) => cgroup,
            None => Target::Attach(targets),
        }
    }

    /// The log files and journals, as the session follows them.
    fn logs(self) -> Vec<LogSource> {
        self.logs
            .into_iter()
            .map(LogSource::File)
            .chain(self.journals.into_iter().map(LogSource::Journal))
            .collect()
    }
}

#[derive(Args)]
struct ShimArgs {
    /// A shim: cuda=PATH or nvml=PATH (repeatable). Default: the config file, plus detection.
    #[arg(long = "shim", value_name = "API=PATH")]
    shims: Vec<String>,
    /// Shim configuration (TOML: cuda = "PATH", nvml = "PATH").
    #[arg(long, value_name = "FILE", default_value = SHIMS_CONFIG)]
    shims_config: PathBuf,
}

impl ViewArgs {
    fn target(self, exe: Option<String>) -> inspect::Target {
        inspect::Target {
            pid: self.pid,
            root: self.root,
            env: self.env,
            exe,
        }
    }
}

#[derive(Args)]
struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the trace to FILE (mode 0600) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Kernel ring buffer size in bytes: a power of two, at least 4096 (suffixes K, M).
    #[arg(long, value_name = "BYTES", default_value = RING_DEFAULT, value_parser = parse_ring_size)]
    ring_size: u32,
    /// Never pause a traced process. By default one that opens a CUDA/NVML library not yet
    /// probed is held (SIGSTOP, then SIGCONT) for the milliseconds it takes to put the API
    /// uprobes on it (never over a second, nor past the tracer's death); without that, its
    /// first calls may go unseen.
    #[arg(long)]
    no_stop: bool,
    /// What traces: eBPF, or ptrace where the kernel refuses BPF.
    /// `auto`: eBPF when the kernel loads it, otherwise ptrace, with a line saying why;
    /// `ebpf` never falls back.
    #[arg(long, value_enum, env = "VGPU_TRACE_BACKEND", default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
}

impl Cli {
    fn view(&self) -> View {
        match self.view {
            _ if self.quiet => View::Quiet,
            View::Auto if self.verbose > 0 => View::Full,
            view => view,
        }
    }
}

/// The default `--ring-size`: 8 MiB holds a 1M-event burst between drains (measured), and a
/// larger ring's pages count against the tracer's memory.
const RING_DEFAULT: &str = "8M";

/// `200M`, `1G`, `512K`, or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1u64 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 200M)"))
}

/// An address to listen on: `IP:PORT` (`[::1]:9464` for IPv6).
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address and port (e.g. 127.0.0.1:9464)"))
}

/// A pass gap: long enough for the session's reordering of events to settle.
fn parse_gap(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_millis(200) {
        return Err(format!("{s:?} is too short (at least 200ms)"));
    }
    Ok(d)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1u64 << 20),
        _ => (s, 1),
    };
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not a size"))?
        .checked_mul(unit)
        .ok_or("size too large")?;
    if n < 4096 || !n.is_power_of_two() || n > (1 << 30) {
        return Err(format!("{s} must be a power of two from 4K to 1024M"));
    }
    Ok(n as u32)
}

/// `500ms`, `30s`, `2m`, `1h`, or plain seconds.
fn parse_until(s: &str) -> Result<Box<Rule>, String> {
    Rule::parse_inline(s).map(Box::new)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (digits, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(unit, scale)| s.strip_suffix(unit).map(|d| (d, *scale)))
        .unwrap_or((s, 1.0));
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 2m)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(value * scale))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // aya's feature probes fail wherever BPF is refused; the error says why, once.
        0 => "warn,aya::kernel_features=error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let outputs = Outputs {
        color: cli.color,
        view: cli.view(),
        ..Outputs::default()
    };
    match cli.command {
        Command::Completions { shell } => completions(shell),
        Command::Manpages { dir } => manpages(&dir),
        Command::PtraceEngine { attach, args } => {
            use vgpu_trace::backend::ptrace::{Job, serve};
            let job = if attach {
                Job::Attach(args.iter().filter_map(|a| a.parse().ok()).collect())
            } else {
                Job::Run(args)
            };
            Ok(serve(job))
        }
        Command::Doctor {
            kernel,
            view,
            shims,
            ollama,
            format,
        } => inspect::doctor(DoctorOptions {
            kernel_only: kernel,
            target: view.target(None),
            shims: shims.shims,
            shims_config: shims.shims_config,
            ollama,
            format,
        }),
        Command::Resolve {
            name,
            view,
            exe,
            shims,
            format,
        } => inspect::resolve(ResolveOptions {
            name,
            target: view.target(exe),
            shims: shims.shims,
            shims_config: shims.shims_config,
            format,
        }),
        Command::Diff { before, after } => commands::diff(&before, &after),
        Command::Check { file, expect } => commands::check(&file, &expect),
        Command::Replay {
            file,
            format,
            perfetto,
        } => commands::replay(
            &file,
            &Outputs {
                format,
                perfetto,
                ..outputs
            },
        ),
        Command::Record {
            output,
            shims,
            ring_size,
            no_stop,
            backend,
            perfetto,
            stop,
            attach,
            follow,
            cmd,
        } => {
            let target = match follow.cgroup() {
                Some(cgroup) => cgroup,
                None if attach.is_empty() => Target::Run(cmd),
                None => Target::Attach(attach),
            };
            let how = How {
                ring_bytes: ring_size,
                stop_to_arm: !no_stop,
                backend,
                duration: stop.duration,
                until: stop.until.map(|rule| *rule),
            };
            let outputs = Outputs {
                record: Some(output),
                perfetto,
                ..outputs
            };
            trace(target, outputs, shims, how, follow.logs())
        }
        Command::Watch {
            shims,
            all,
            follow,
            records,
            keep,
            max_size,
            metrics,
            pass_gap,
            ring_size,
            no_stop,
            duration,
            targets,
        } => {
            let target = follow.target(all, targets);
            let opts = vgpu_trace::watch::Options {
                records,
                keep: keep as usize,
                max_bytes: max_size,
                gap: pass_gap,
                metrics,
            };
            let (sink, bound) = vgpu_trace::watch::prepare(&opts)?;
            eprintln!(
                "vgpu-trace: metrics at http://{bound}/metrics; records in {}",
                opts.records.display()
            );
            let how = How {
                ring_bytes: ring_size,
                stop_to_arm: !no_stop,
                backend: BackendChoice::from_env(),
                duration,
                until: None,
            };
            let outputs = Outputs {
                custom: Some(sink),
                ..outputs
            };
            session::trace(Config {
                watch: true,
                ..config(target, outputs, shims, how, follow.logs())
            })
        }
        Command::Run { output, shims, cmd } => {
            let (outputs, how) = output.split(outputs);
            trace(Target::Run(cmd), outputs, shims, how, Vec::new())
        }
        Command::Attach {
            output,
            shims,
            all,
            follow,
            stop,
            targets,
        } => {
            let target = follow.target(all, targets);
            let (outputs, mut how) = output.split(outputs);
            how.duration = stop.duration;
            how.until = stop.until.map(|rule| *rule);
            trace(target, outputs, shims, how, follow.logs())
        }
    }
}

/// How a session traces, beside what and where to.
struct How {
    ring_bytes: u32,
    stop_to_arm: bool,
    backend: BackendChoice,
    duration: Option<std::time::Duration>,
    until: Option<Rule>,
}

impl OutputArgs {
    fn split(self, outputs: Outputs) -> (Outputs, How) {
        let how = How {
            ring_bytes: self.ring_size,
            stop_to_arm: !self.no_stop,
            backend: self.backend,
            duration: None,
            until: None,
        };
        let outputs = Outputs {
            format: self.format,
            output: self.output,
            ..outputs
        };
        (outputs, how)
    }
}

/// `run`, `attach` and `record`: one session.
fn trace(
    target: Target,
    outputs: Outputs,
    shims: ShimArgs,
    how: How,
    logs: Vec<LogSource>,
) -> anyhow::Result<i32> {
    session::trace(config(target, outputs, shims, how, logs))
}

fn config(
    target: Target,
    outputs: Outputs,
    shims: ShimArgs,
    how: How,
    logs: Vec<LogSource>,
) -> Config {
    Config {
        target,
        outputs,
        ring_bytes: how.ring_bytes,
        shims: shims.shims,
        shims_config: shims.shims_config,
        stop_to_arm: how.stop_to_arm,
        duration: how.duration,
        until: how.until,
        backend: how.backend,
        logs,
        notices: session::Notices::stderr(),
        watch: false,
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vgpu-trace", &mut script);
    // A reader that stops early (`| head`) is not an error worth a message.
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e)
            .context("cannot write the completion script")
            .fail_as(Failure::Usage),
        _ => Ok(0),
    }
}

fn manpages(dir: &std::path::Path) -> anyhow::Result<i32> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .fail_as(Failure::Usage)?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))
        .fail_as(Failure::Usage)?;
    Ok(0)
}

/// A status means the same in every subcommand (README, "Exit status"): its answer (0; 1 when
/// a check failed or a difference was found; for `run`, the command's own status), or for an
/// error, the class it was marked with (`failure::exit_code`).
fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("vgpu-trace: error: {err:#}");
            ExitCode::from(failure::exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("16M"), Ok(16 << 20));
        assert_eq!(
            parse_ring_size(RING_DEFAULT),
            Ok(vgpu_trace::session::DEFAULT_RING_BYTES)
        );
        assert!(parse_ring_size("5000").is_err());
        assert!(parse_ring_size("1K").is_err());
        assert!(parse_ring_size("x").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
