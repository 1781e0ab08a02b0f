// ggml's x86 CPU variants (GGML_CPU_ALL_VARIANTS): the 14 llama.cpp's build ships, which
// llama-server brings from v0.30 on. Included by build.rs (which builds them) and scenario.rs
// (which installs them), so the two lists are one.
pub const CPU_VARIANTS: [&str; 14] = [
    "x64",
    "sse42",
    "sandybridge",
    "ivybridge",
    "piledriver",
    "haswell",
    "skylakex",
    "cannonlake",
    "cascadelake",
    "icelake",
    "cooperlake",
    "zen4",
    "alderlake",
    "sapphirerapids",
];
