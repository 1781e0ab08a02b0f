//! The `vgpu-trace` command line.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use vgpu_trace::failure::{self, FailAs as _, Failure};
use vgpu_trace::inspect::{self, DoctorOptions, ResolveOptions};
use vgpu_trace::judge::expect::Rule;
use vgpu_trace::loader::shims::SHIMS_CONFIG;
use vgpu_trace::session::{
    self, ColorChoice, Config, Format, Target, cgroup::CgroupSpec, logfile::LogSource,
};

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
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// How much of the timeline to show: compact on a terminal and full otherwise (auto), one
    /// line per decision that matters (compact), every event (full), the verdict (quiet).
    #[arg(long, global = true, value_enum, default_value_t = ViewArg::Auto)]
    view: ViewArg,
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
        /// Process ids or names (comm, executable or argv[0] file name), e.g. `ollama`.
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
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Also write a Chrome trace (ui.perfetto.dev, chrome://tracing) here.
        #[arg(long, value_name = "FILE")]
        perfetto: Option<PathBuf>,
        /// Stop recording after this long (e.g. 30s, 2m); a started command keeps running.
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Stop recording once an event or the verdict matches this rule, written as `check`
        /// rules are, on one line: `api=cuInit,result=CUDA_SUCCESS`, `verdict=shim-used`,
        /// `load=libcuda.so.1,class=shim`, `dlopen=libggml-cuda.so,ok=false`. With
        /// --duration, whichever comes first.
        #[arg(long, value_name = "EXPR", value_parser = parse_until)]
        until: Option<Box<Rule>>,
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
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
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
        #[command(flatten)]
        view: ViewArgs,
        #[command(flatten)]
        shims: ShimArgs,
        /// The ollama binary (default: the process itself, `ollama` on PATH, /usr/local/bin, /usr/bin).
        #[arg(long, value_name = "PATH")]
        ollama: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
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
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
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

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

impl From<ReportFormat> for inspect::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Text => inspect::Format::Text,
            ReportFormat::Json => inspect::Format::Json,
        }
    }
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
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    format: OutputFormat,
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
    /// `auto`: eBPF when the kernel loads it, otherwise ptrace, with a line saying why.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
}

#[derive(Clone, Copy, ValueEnum)]
enum ViewArg {
    Auto,
    Compact,
    Full,
    Quiet,
}

impl Cli {
    fn view(&self) -> vgpu_trace::sink::View {
        use vgpu_trace::sink::View;
        match self.view {
            _ if self.quiet => View::Quiet,
            ViewArg::Auto if self.verbose > 0 => View::Full,
            ViewArg::Auto => View::Auto,
            ViewArg::Compact => View::Compact,
            ViewArg::Full => View::Full,
            ViewArg::Quiet => View::Quiet,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Auto,
    Ebpf,
    Ptrace,
}

impl From<Backend> for session::BackendChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => Self::Auto,
            Backend::Ebpf => Self::Ebpf,
            Backend::Ptrace => Self::Ptrace,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// A timeline for people.
    Text,
    /// JSON Lines: header, one object per event, summary.
    Jsonl,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// The default `--ring-size`: 8 MiB holds a 1M-event burst between drains (measured), and a
/// larger ring's pages count against the tracer's memory.
const RING_DEFAULT: &str = "8M";

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
    let view = cli.view();
    let color = match cli.color {
        Color::Auto => ColorChoice::Auto,
        Color::Always => ColorChoice::Always,
        Color::Never => ColorChoice::Never,
    };
    let (target, output, shims, logs) = match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vgpu-trace", &mut script);
            // A reader that stops early (`| head`) is not an error worth a message.
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(e)
                        .context("cannot write the completion script")
                        .fail_as(Failure::Usage);
                }
                _ => return Ok(0),
            }
        }
        Command::Manpages { dir } => {
            use clap::CommandFactory as _;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))
                .fail_as(Failure::Usage)?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))
                .fail_as(Failure::Usage)?;
            return Ok(0);
        }
        Command::PtraceEngine { attach, args } => {
            use vgpu_trace::backend::ptrace::{Job, serve};
            let job = if attach {
                Job::Attach(args.iter().filter_map(|a| a.parse().ok()).collect())
            } else {
                Job::Run(args)
            };
            return Ok(serve(job));
        }
        Command::Doctor {
            view,
            shims,
            ollama,
            format,
        } => {
            return inspect::doctor(DoctorOptions {
                target: view.target(None),
                shims: shims.shims,
                shims_config: shims.shims_config,
                ollama,
                format: format.into(),
            });
        }
        Command::Resolve {
            name,
            view,
            exe,
            shims,
            format,
        } => {
            return inspect::resolve(ResolveOptions {
                name,
                target: view.target(exe),
                shims: shims.shims,
                shims_config: shims.shims_config,
                format: format.into(),
            });
        }
        Command::Diff { before, after } => return diff(&before, &after),
        Command::Check { file, expect } => return check(&file, &expect),
        Command::Replay {
            file,
            format,
            perfetto,
        } => return replay(&file, format, color, view, perfetto.as_deref()),
        Command::Record {
            output,
            shims,
            ring_size,
            no_stop,
            backend,
            perfetto,
            duration,
            until,
            attach,
            follow,
            cmd,
        } => {
            let target = match follow.cgroup() {
                Some(cgroup) => cgroup,
                None if attach.is_empty() => Target::Run(cmd),
                None => Target::Attach(attach),
            };
            let logs = follow.logs();
            return session::trace(Config {
                target,
                format: Format::Text,
                output: None,
                record: Some(output),
                perfetto,
                color,
                ring_bytes: ring_size,
                shims: shims.shims,
                shims_config: shims.shims_config,
                stop_to_arm: !no_stop,
                duration,
                until: until.map(|rule| *rule),
                backend: backend.into(),
                logs,
                view,
                notices: session::Notices::stderr(),
            });
        }
        Command::Run { output, shims, cmd } => (Target::Run(cmd), output, shims, Vec::new()),
        Command::Attach {
            output,
            shims,
            all,
            follow,
            targets,
        } => {
            let target = match follow.cgroup() {
                _ if all => Target::System,
                Some(cgroup) => cgroup,
                None => Target::Attach(targets),
            };
            (target, output, shims, follow.logs())
        }
    };
    session::trace(Config {
        target,
        format: match output.format {
            OutputFormat::Text => Format::Text,
            OutputFormat::Jsonl => Format::Jsonl,
        },
        output: output.output,
        record: None,
        perfetto: None,
        color,
        ring_bytes: output.ring_size,
        shims: shims.shims,
        shims_config: shims.shims_config,
        stop_to_arm: !output.no_stop,
        duration: None,
        until: None,
        backend: output.backend.into(),
        logs,
        view,
        notices: session::Notices::stderr(),
    })
}

/// A record's events; an unreadable or malformed file is bad input.
fn read_record(path: &std::path::Path) -> anyhow::Result<Vec<vgpu_trace::model::TraceEvent>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .fail_as(Failure::Usage)?;
    // ReplayError's message holds its source's already.
    let (events, replayed) = vgpu_trace::replay::read_events(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        .fail_as(Failure::Usage)?;
    if replayed.summary.is_none() {
        eprintln!(
            "vgpu-trace: {} is incomplete (no summary line)",
            path.display()
        );
    }
    Ok(events)
}

/// Exit 0 when every rule holds, 1 when one does not.
fn check(file: &std::path::Path, expect: &std::path::Path) -> anyhow::Result<i32> {
    use vgpu_trace::judge::expect::{Expectations, check, report};
    let rules = std::fs::read_to_string(expect)
        .with_context(|| format!("cannot read {}", expect.display()))
        .and_then(|t| {
            Expectations::parse(&t).map_err(|e| anyhow::anyhow!("{}: {e}", expect.display()))
        })
        .fail_as(Failure::Usage)?;
    let events = read_record(file)?;
    let failures = check(&events, &rules);
    let total = rules.expect.len() + rules.forbid.len();
    let text = format!(
        "{}{} of {total} expectations hold\n",
        report(&failures),
        total - failures.len()
    );
    print_escaped(&text);
    Ok(i32::from(!failures.is_empty()))
}

/// Exit 0 when nothing differs, 1 when something does.
fn diff(before: &std::path::Path, after: &std::path::Path) -> anyhow::Result<i32> {
    use vgpu_trace::judge::diff;
    let (a, b) = (read_record(before)?, read_record(after)?);
    let changes = diff::diff(&diff::profile(&a), &diff::profile(&b));
    print_escaped(&diff::render(&changes));
    Ok(i32::from(!changes.is_empty()))
}

/// Writes a report to stdout, escaped line by line (names and paths come from traced
/// processes). A reader that went away (`| head`) ends the output, not the program.
fn print_escaped(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for line in text.lines() {
        if writeln!(out, "{}", vgpu_trace::sanitize::plain(line)).is_err() {
            return;
        }
    }
}

/// Exit 0 for a complete record, 0 with a warning for one cut short; a bad file is bad input.
fn replay(
    file: &std::path::Path,
    format: OutputFormat,
    color: ColorChoice,
    view: vgpu_trace::sink::View,
    perfetto: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    use std::io::IsTerminal as _;
    use vgpu_trace::sink::{JsonlSink, PerfettoSink, Sink, TeeSink};
    let input = std::fs::File::open(file)
        .map(std::io::BufReader::new)
        .with_context(|| format!("cannot read {}", file.display()))
        .fail_as(Failure::Usage)?;
    let stdout = std::io::stdout();
    let is_tty = stdout.is_terminal();
    let paint = color.enabled(is_tty);
    let mut sink: Box<dyn Sink> = match format {
        OutputFormat::Text => vgpu_trace::sink::text_sink(stdout.lock(), paint, view, is_tty),
        OutputFormat::Jsonl => Box::new(JsonlSink::new(stdout.lock())),
    };
    if let Some(path) = perfetto {
        let file = vgpu_trace::output::create_private(path)?;
        let trace = Box::new(PerfettoSink::new(std::io::BufWriter::new(file)));
        sink = Box::new(TeeSink(vec![trace, sink]));
    }
    match vgpu_trace::replay::replay(input, sink.as_mut()) {
        Ok(r) if r.summary.is_none() => {
            eprintln!(
                "vgpu-trace: {} is incomplete: {} events and no summary line (the tracer was stopped before it finished)",
                file.display(),
                r.events
            );
            Ok(0)
        }
        Ok(_) => Ok(0),
        Err(vgpu_trace::replay::ReplayError::Io(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(0)
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", file.display())).fail_as(Failure::Usage),
    }
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
