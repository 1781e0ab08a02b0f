//! One file per hook family.
mod dl;
mod exec;
mod files;
mod sched;
