//! Folds over a timeline, pure and the same live or in replay: the verdict, `check` rules,
//! `diff`, and the recognition of Ollama's own log lines they read.
pub mod diff;
pub mod expect;
pub mod ollama_log;
pub mod verdict;
