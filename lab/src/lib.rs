//! The scenario lab: an `ollama` stand-in faithful to Ollama's GPU discovery in its three eras,
//! C stand-ins for the libraries it loads (built by build.rs), and presets that install the
//! reference shims into scratch trees, healthy or broken on purpose.
pub mod artifacts;
pub mod cpu_variants;
pub mod cuda;
pub mod dl;
pub mod ggml;
pub mod glob;
pub mod http;
pub mod install;
pub mod ollama;
pub mod preset;
pub mod run;
pub mod scenario;
pub mod slog;
