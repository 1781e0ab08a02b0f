//! The engine's messages to the session: queued by the engine, written by a thread of their
//! own in batches, so that a stop costs no write and the session is woken once a batch. Once
//! the session is gone (a write fails), messages are dropped: the engine goes on serving.
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::Message;

/// How long a message may wait for its batch.
const BATCH: Duration = Duration::from_millis(5);
/// Queued bytes past which the engine waits for the writer rather than queue more.
const QUEUE_MAX: usize = 4 << 20;

pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when bytes arrive in an empty queue, a write is asked for, or one is done.
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// The writer holds bytes taken from the queue and not yet written.
    writing: bool,
    /// A write is wanted now, without waiting for the batch.
    urgent: bool,
    /// The session is gone.
    gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed.wait(q).unwrap_or_else(|e| e.into_inner())
    }
}

impl Outbox {
    pub fn new(mut file: std::fs::File) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            changed: Condvar::new(),
        });
        let writer = shared.clone();
        std::thread::spawn(move || {
            // Signals are the engine's to read (SIGCHLD wakes it); here one would be lost.
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_BLOCK,
                Some(&nix::sys::signal::SigSet::all()),
                None,
            );
            let mut q = writer.lock();
            loop {
                while q.bytes.is_empty() && !q.gone {
                    q = writer.wait(q);
                }
                if q.gone {
                    return;
                }
                // Asleep while nothing is queued; a batch gathers once something is.
                q = writer
                    .changed
                    .wait_timeout_while(q, BATCH, |q| !q.urgent && !q.gone)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                q.urgent = false;
                let bytes = std::mem::take(&mut q.bytes);
                q.writing = true;
                drop(q);
                let written = file.write_all(&bytes).is_ok();
                q = writer.lock();
                q.writing = false;
                q.gone |= !written;
                writer.changed.notify_all();
            }
        });
        Self { shared }
    }

    pub fn send(&mut self, message: &Message) {
        let mut q = self.shared.lock();
        if q.gone {
            return;
        }
        let was_empty = q.bytes.is_empty();
        let _ = serde_json::to_writer(&mut q.bytes, message);
        q.bytes.push(b'\n');
        if was_empty {
            self.shared.changed.notify_all();
        }
        while q.bytes.len() > QUEUE_MAX && !q.gone {
            q.urgent = true;
            self.shared.changed.notify_all();
            q = self.shared.wait(q);
        }
    }

    /// Asks for what is queued to be written now.
    pub fn flush(&mut self) {
        self.shared.lock().urgent = true;
        self.shared.changed.notify_all();
    }

    /// Waits until what is queued is written (or the session is gone).
    pub fn drain(&mut self) {
        self.flush();
        let mut q = self.shared.lock();
        while (!q.bytes.is_empty() || q.writing) && !q.gone {
            q = self.shared.wait(q);
        }
    }
}
