//! vgpu-trace: which shared libraries a process tree asks for and gets, seen from the kernel.
//!
//! Pipeline: `backend` (produces [`event::RawEvent`]s) → `collector` (process state, call
//! matching) → [`model::TraceEvent`]s → `sink`s (terminal timeline, JSON Lines).
pub mod backend;
pub mod event;
pub mod procfs;
pub mod text;
