//! The loader model: what ld.so would do, from files alone. ELF facts, ld.so.cache and
//! ld.so.conf, the search itself, the platform's subdirectories, library classes and the
//! declared shims. File access goes through [`fs::Fs`], so a process's root
//! (`/proc/PID/root`) and test trees work alike; nothing here talks to the kernel or the tracer.
pub mod classify;
pub mod elf;
pub mod fs;
pub mod ldcache;
pub mod ldconf;
pub mod ldso;
pub mod platform;
pub mod shims;
