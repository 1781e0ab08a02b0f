//! One file per hook family.
mod api;
mod dl;
mod exec;
mod files;
mod output;
mod sched;
mod syscalls;
