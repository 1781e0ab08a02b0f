//! Pure analysis: ELF facts, the dynamic loader's search, shim classification and the checks
//! `doctor` runs. File access goes through [`fs::Fs`], so a process's root (`/proc/PID/root`)
//! and test trees work alike; nothing here talks to the kernel or the tracer.
pub mod classify;
pub mod codes;
pub mod diff;
pub mod doctor;
pub mod elf;
pub mod expect;
pub mod fs;
pub mod ldcache;
pub mod ldconf;
pub mod ldso;
pub mod ollama_log;
pub mod platform;
pub mod shims;
pub mod surfaces;
pub mod verdict;
