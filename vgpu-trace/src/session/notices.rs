//! One-line notices for whoever runs a session: that tracing started, how long arming took,
//! processes held, lost events, a fall back to ptrace. The session hands them to its caller
//! instead of printing, so a library user (`testing::Trace::record` in a test suite) decides
//! where they go; the command line prints them on stderr.
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Notices(Arc<dyn Fn(&str) + Send + Sync>);

impl Notices {
    pub fn new(tell: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(tell))
    }

    /// `vgpu-trace: LINE` on stderr, as the command line shows them.
    pub fn stderr() -> Self {
        Self::new(|line| eprintln!("vgpu-trace: {line}"))
    }

    /// Kept in `into`, in order.
    pub fn collect(into: Arc<Mutex<Vec<String>>>) -> Self {
        Self::new(move |line| {
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.to_string());
        })
    }

    pub fn tell(&self, line: impl AsRef<str>) {
        (self.0)(line.as_ref());
    }
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notices")
    }
}
