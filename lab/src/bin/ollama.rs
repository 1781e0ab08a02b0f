//! The lab's `ollama` stand-in; see `vgpu_lab::ollama`.
fn main() {
    match vgpu_lab::ollama::main() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("Error: {err:#}");
            std::process::exit(1);
        }
    }
}
