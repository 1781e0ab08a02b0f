//! Ctrl-C and SIGTERM before the event loop listens for them: while the programs load and the
//! probes go on. The default action would kill the tracer and leave an empty record; instead
//! the signal is noted, interrupts the verifier (which gives up when a signal is pending), and
//! the session ends with a valid record and a line that says what happened.
use std::sync::atomic::{AtomicI32, Ordering};

static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(signal: libc::c_int) {
    CAUGHT.store(signal, Ordering::SeqCst);
}

/// Notes SIGINT and SIGTERM from now on, without SA_RESTART (a system call in progress
/// returns). The event loop's own handlers take over later and still find the note.
pub fn catch() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction whose handler only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that arrived since [`catch`], if one did.
pub fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Its name, for the notice.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
