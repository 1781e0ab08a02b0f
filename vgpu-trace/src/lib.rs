//! vgpu-trace: which shared libraries a process tree asks for and gets, seen from the kernel.
//!
//! Pipeline: `backend` (produces [`event::RawEvent`]s) → [`collector`] (process state, call
//! matching) → [`model::TraceEvent`]s → [`sink`]s (terminal timeline, JSON Lines).
//! [`session`] wires them together for `run` and `attach`.
pub mod analysis;
pub mod backend;
pub mod collector;
pub mod event;
pub mod failure;
pub mod files;
pub mod inspect;
pub mod model;
pub mod output;
pub mod procfs;
pub mod replay;
pub mod sanitize;
pub mod session;
pub mod sink;
pub mod sysinfo;
pub mod testing;
pub mod text;
