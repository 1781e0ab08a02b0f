//! Ctrl-C and SIGTERM before the event loop listens for them: while the programs load and the
//! probes go on. The default action would kill the tracer and leave an empty record; instead
//! the signal is noted, interrupts the verifier (which gives up when a signal is pending; the
//! loader then stops before the next program), and the session ends with a valid record and
//! a line that says what happened. A second signal acts as if nothing had caught the first.
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// What SIGINT and SIGTERM did before [`catch`], to put back.
static PREVIOUS: Mutex<Option<[libc::sigaction; 2]>> = Mutex::new(None);

extern "C" fn note(signal: libc::c_int) {
    if CAUGHT.swap(signal, Ordering::SeqCst) != 0 {
        // The second: the user insists. SAFETY: async-signal-safe calls only.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Notes SIGINT and SIGTERM from now on, without SA_RESTART (a system call in progress
/// returns), until [`release`].
pub fn catch() {
    CAUGHT.store(0, Ordering::SeqCst);
    let mut previous = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: zeroed sigactions, and a handler that only stores to an atomic (or, the second
    // time, gives the signal its default action).
    let saved = SIGNALS.map(|signal| unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &action, &mut old);
        old
    });
    previous.get_or_insert(saved);
}

/// Gives SIGINT and SIGTERM back what they did before [`catch`]: before the event loop's own
/// handlers go on, before a fall back to ptrace, and when the session is over (a library user's
/// process keeps its own handling). A signal noted meanwhile stays [`caught`].
pub fn release() {
    let Some(saved) = PREVIOUS.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    for (signal, old) in SIGNALS.iter().zip(saved) {
        // SAFETY: putting back a sigaction the kernel gave us.
        unsafe { libc::sigaction(*signal, &old, std::ptr::null_mut()) };
    }
}

/// The signal that arrived since [`catch`], if one did.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Whether a signal arrived: what the loader asks between programs.
pub fn stopping() -> bool {
    caught().is_some()
}

/// Its name, for the notice.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
