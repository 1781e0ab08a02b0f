use which::which;

/// Rebuild the programs when the linker changes: a new bpf-linker may produce different
/// bytecode and cargo cannot see that on its own.
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found; run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
