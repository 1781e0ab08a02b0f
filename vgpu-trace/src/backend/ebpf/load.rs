//! Loading programs into the kernel: each load timed and its verifier count kept, a verifier
//! that runs past a deadline interrupted, and a refusal told in one line that names the
//! program and the verifier's reason (never its whole log, and never blamed on privileges the
//! tracer has).
use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use aya::programs::ProgramError;

use crate::failure::Failure;

/// What loading one program cost.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProgramLoad {
    pub name: String,
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`, 5.16+).
    pub verified_insns: Option<u32>,
    /// Wall time of the load, the verifier's included.
    pub micros: u64,
}

/// The verifier's budget of processed instructions (BPF_COMPLEXITY_LIMIT_INSNS).
pub const VERIFIER_BUDGET: u32 = 1_000_000;

/// `bpf_prog_info.recursion_misses` of the program `fd` (5.12+; `None` before).
pub fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info up to recursion_misses (offset 208).
    const MISSES_AT: usize = 208;
    let mut info = [0u8; MISSES_AT + 8];
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most info_len bytes into `info`.
    let ret = unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) };
    // The kernel writes back the length it filled: older kernels stop before the field.
    let filled = u32::from_ne_bytes(attr[4..8].try_into().ok()?) as usize;
    (ret == 0 && filled >= MISSES_AT + 8)
        .then(|| u64::from_ne_bytes(info[MISSES_AT..].try_into().expect("8 bytes")))
}

/// Why the kernel refused the programs: one line for the notice that says a session falls
/// back to ptrace, and the whole reason for an error.
#[derive(Debug)]
pub struct Refused {
    pub short: String,
    message: String,
    source: Option<anyhow::Error>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref())
    }
}

impl Refused {
    pub fn new(short: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            short: short.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The refusal in `err`'s chain, if it is one.
    pub fn of(err: &anyhow::Error) -> Option<&Self> {
        crate::failure::find::<Self>(err)
    }

    /// Why the programs did not load, in one line: a refusal's own words, else the first line
    /// of the error (never a verifier's whole log), sanitised and at most 200 characters.
    pub fn one_line(err: &anyhow::Error) -> String {
        match Self::of(err) {
            Some(refused) => refused.short.clone(),
            None => {
                let text = format!("{err:#}");
                let line = text.lines().next().unwrap_or_default();
                crate::sanitize::plain(&line.chars().take(200).collect::<String>())
            }
        }
    }

    /// As an error that exits 3 ("cannot trace").
    pub fn into_error(self) -> anyhow::Error {
        Failure::CannotTrace.mark(anyhow::Error::new(self))
    }
}

/// The verifier's reason in one line, from its log at the STATS level (no per-instruction
/// trace): its last message that is not a statistic, with the count it reached.
pub fn verifier_reason(log: &str) -> Option<String> {
    let is_stat = |l: &str| {
        l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with("processed ")
    };
    let reason = log
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !is_stat(l))?;
    Some(match processed(log) {
        Some(n) if n > 0 => format!("{reason} ({n} instructions processed)"),
        _ => reason.to_string(),
    })
}

/// The verifier's count, from its statistics line (`processed N insns (limit ...)`).
pub fn processed(log: &str) -> Option<u32> {
    log.lines()
        .find_map(|l| l.strip_prefix("processed ")?.split_whitespace().next())?
        .parse()
        .ok()
}

/// `bpf(cmd, attr)`: the raw system call, for what aya does not offer (the count of skipped
/// runs, a load with the log kept on success).
///
/// # Safety
/// `attr` is the union member `cmd` reads, and every pointer in it is valid for the call.
pub unsafe fn sys_bpf(cmd: libc::c_long, attr: &mut [u8]) -> libc::c_long {
    // SAFETY: as the caller promises.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) }
}

/// Why loading `program` failed, as a [`Refused`]: the verifier's own reason when it gave
/// one, the deadline when the watchdog cut it short, else the system call's error.
pub fn program_refused(program: &str, err: ProgramError, watchdog: &Watchdog) -> anyhow::Error {
    if watchdog.fired() {
        tracing::debug!("{program}: {err}");
        return past_deadline(program, watchdog);
    }
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &err
    {
        let log = verifier_log.to_string();
        // The whole log is for whoever asks (-vv); the error keeps its reason.
        tracing::debug!("{program}: the verifier's log:\n{log}");
        if let Some(reason) = verifier_reason(&log) {
            return Refused::new(
                format!("the verifier refused {program}: {reason}"),
                format!("the kernel's verifier refused {program} ({io_error}): {reason}"),
            )
            .into_error();
        }
    }
    refused(anyhow::Error::new(err).context(format!("loading {program}")))
}

/// The verifier worked on `program` past the deadline.
pub fn past_deadline(program: &str, watchdog: &Watchdog) -> anyhow::Error {
    let limit = watchdog.limit.unwrap_or_default().as_millis();
    Refused::new(
        format!("the verifier ran past {limit} ms on {program}"),
        format!(
            "the kernel's verifier was still at {program} after {limit} ms, and was stopped; \
             --backend ebpf waits for it, and VGPU_TRACE_VERIFIER_DEADLINE_MS sets the limit"
        ),
    )
    .into_error()
}

/// Interrupts a verifier that runs past a deadline: the kernel's verifier gives up with
/// EAGAIN when a signal is pending for the thread that asked. The deadline is the loading
/// thread's CPU time, counted from each program's load (the verifier's work, in that thread's
/// system call): neither the tracer's own parsing nor a busy machine, which would only make
/// it wait for a CPU, brings it closer. Once a load is past its deadline, the thread signals
/// the loading thread every few milliseconds until the load returns (the first signal may
/// land before the verifier starts, and aya tries a load again after EAGAIN).
pub struct Watchdog {
    limit: Option<Duration>,
    shared: Arc<(Mutex<Deadline>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The loading thread's CPU clock.
    clock: libc::clockid_t,
}

#[derive(Default)]
struct Deadline {
    /// The loading thread's CPU time past which the load counts as too long.
    at: Option<Duration>,
    fired: bool,
    done: bool,
}

/// The signal the watchdog sends; the tracer has no other use for it.
const SIGNAL: libc::c_int = libc::SIGURG;
/// How often the watchdog reads the loading thread's CPU time while a load is under way.
const POLL: Duration = Duration::from_millis(2);

extern "C" fn ignore(_: libc::c_int) {}

/// The CPU time `clock` has counted.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Watchdog {
    /// A watchdog for loads made by the calling thread; `None` never fires.
    pub fn start(limit: Option<Duration>) -> Self {
        let shared = Arc::new((Mutex::new(Deadline::default()), Condvar::new()));
        let mut clock: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
        // SAFETY: this thread's own id, and a clock id to fill in.
        unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        let thread = limit.map(|_| {
            install_handler();
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let shared = shared.clone();
            std::thread::spawn(move || {
                let (lock, cvar) = &*shared;
                let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if state.done {
                        return;
                    }
                    let wait = match state.at {
                        None => Duration::from_secs(3600),
                        Some(at) if cpu_time(clock) < at => POLL,
                        Some(_) => {
                            state.fired = true;
                            // SAFETY: a signal with a handler, to a thread of this process.
                            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, SIGNAL) };
                            POLL
                        }
                    };
                    state = cvar
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            })
        });
        Self {
            limit,
            shared,
            thread,
            clock,
        }
    }

    fn set(&self, at: Option<Duration>) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).at = at;
        cvar.notify_all();
    }

    /// Starts the clock for one load.
    pub fn arm(&self) {
        if let Some(limit) = self.limit {
            self.set(Some(cpu_time(self.clock).saturating_add(limit)));
        }
    }

    /// Stops it.
    pub fn disarm(&self) {
        self.set(None);
    }

    /// Whether a load ran past its deadline.
    pub fn fired(&self) -> bool {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).done = true;
        cvar.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A handler that does nothing: an ignored signal would not interrupt the verifier, and
/// without SA_RESTART the system call returns rather than starting over.
fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that touches nothing.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(SIGNAL, &action, std::ptr::null_mut());
        }
    });
}

/// How much the verifier writes: statistics and its reason, unless the environment's
/// `VGPU_TRACE_VERIFIER_LOG=verbose` asks for every instruction (to debug a refusal, with -vv).
/// A failed load is tried once more by aya to read the log, and a per-instruction log would
/// overflow its buffer and be tried again and again, each time a whole verification.
pub fn log_level() -> aya::VerifierLogLevel {
    match std::env::var("VGPU_TRACE_VERIFIER_LOG").as_deref() {
        Ok("verbose") => aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS,
        _ => aya::VerifierLogLevel::STATS,
    }
}

/// How much CPU time `auto` lets the verifier spend on one program before it falls back: the
/// environment's `VGPU_TRACE_VERIFIER_DEADLINE_MS`, else 100 ms (the largest takes 4 ms here;
/// one at the edge of the verifier's budget takes seconds).
pub fn auto_deadline() -> Duration {
    let ms = std::env::var("VGPU_TRACE_VERIFIER_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// Whether this process runs in a user namespace other than the initial one (whose uid map is
/// the identity over all 2^32 - 1 ids).
fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|map| {
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields != ["0", "0", "4294967295"]
    })
}

/// Marks a failure to load programs as "cannot trace" (exit 3), and a permission error
/// anywhere in its chain with a message that names the privilege.
pub fn refused(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|c| c == libc::EPERM || c == libc::EACCES)
    }) || format!("{err:#}").contains("Operation not permitted");
    let no_bpf = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
            .is_some_and(|c| c == libc::ENOSYS)
    });
    let refusal = if denied && in_user_namespace() {
        // Root in a user namespace has every capability there, and BPF still needs them in
        // the initial one: say so rather than "run as root".
        Some((
            "EPERM in a user namespace",
            " (unshare -U, a rootless container); BPF needs CAP_BPF and CAP_PERFMON in the \
             host's initial namespace",
        ))
    } else if denied {
        Some((
            "EPERM",
            ": loading programs needs CAP_BPF and CAP_PERFMON (run as root), and \
             kernel.unprivileged_bpf_disabled or a security module may forbid it",
        ))
    } else if no_bpf {
        Some((
            "no bpf() system call",
            " (ENOSYS: a sandbox such as gVisor, or a kernel built without CONFIG_BPF_SYSCALL)",
        ))
    } else {
        None
    };
    let err = match refusal {
        Some((short, why)) => anyhow::Error::new(Refused {
            short: short.to_string(),
            message: format!("the kernel refused BPF: {short}{why}"),
            source: Some(err),
        }),
        None => err,
    };
    // Denied, no BPF in this kernel, or the verifier said no: nothing can be traced here.
    Failure::CannotTrace.mark(err)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_reason_is_the_last_message() {
        let too_large = "BPF program is too large. Processed 1000001 insn\nverification time \
                         5008879 usec\nstack depth 104+0+504\nprocessed 1000001 insns (limit \
                         1000000) max_states_per_insn 57 total_states 32782\n";
        assert_eq!(
            verifier_reason(too_large).as_deref(),
            Some(
                "BPF program is too large. Processed 1000001 insn (1000001 instructions \
                 processed)"
            )
        );
        let stack = "combined stack size of 2 calls is 624. Too large\nverification time 90 \
                     usec\nstack depth 104+520\nprocessed 2523 insns (limit 1000000)\n";
        assert_eq!(
            verifier_reason(stack).as_deref(),
            Some("combined stack size of 2 calls is 624. Too large (2523 instructions processed)")
        );
        let early = "number of funcs in func_info doesn't match number of subprogs\n\
                     processed 0 insns (limit 1000000)\n";
        assert_eq!(
            verifier_reason(early).as_deref(),
            Some("number of funcs in func_info doesn't match number of subprogs")
        );
        assert_eq!(verifier_reason("\n"), None);
    }

    #[test]
    fn a_watchdog_without_a_limit_never_fires() {
        let dog = Watchdog::start(None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!dog.fired());
    }

    #[test]
    fn a_watchdog_counts_cpu_time_and_interrupts_past_its_deadline() {
        let dog = Watchdog::start(Some(Duration::from_millis(20)));
        // Not armed: nothing fires.
        std::thread::sleep(Duration::from_millis(40));
        assert!(!dog.fired());
        // Armed, but asleep: no CPU time spent, nothing fires.
        dog.arm();
        std::thread::sleep(Duration::from_millis(60));
        assert!(!dog.fired());
        // Busy: the deadline passes and the signal comes, as it would in the verifier.
        let started = Instant::now();
        while !dog.fired() && started.elapsed() < Duration::from_secs(5) {
            std::hint::black_box((0..1000u64).sum::<u64>());
        }
        assert!(dog.fired());
        dog.disarm();
    }
}
