//! vgpu-trace: which shared libraries a process tree asks for and gets, seen from the kernel.
//!
//! Pipeline: `backend` (produces [`event::RawEvent`]s) → [`collector`] (process state, call
//! matching) → [`model::TraceEvent`]s → [`sink`]s (terminal timeline, JSON Lines).
//! [`session`] wires them together for `run` and `attach`.
//!
//! Layers, each using only those below it: [`model`] (with [`text`], [`failure`]); the pure
//! [`loader`] model (what ld.so would do) and [`judge`] (folds over a timeline: the verdict,
//! check rules, diff); [`doctor`]'s checks; the backends and the [`collector`]; [`sink`]s;
//! [`session`], [`replay`] and [`inspect`] (doctor and resolve); [`watch`] (a session cut
//! into discovery passes, with metrics); the CLI on top.
pub mod backend;
pub mod collector;
pub mod commands;
pub mod doctor;
pub mod event;
pub mod failure;
pub mod files;
pub mod inspect;
pub mod judge;
pub mod loader;
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
pub mod watch;
