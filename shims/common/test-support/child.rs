//! Re-running a test binary with its own environment: the shims read their configuration once
//! per process, so each environment case runs as a child of the test that asks for it.
//! Included by the shims' `tests/environment.rs` files with `#[path]`.
use std::process::{Command, Output};

const CHILD_MARKER: &str = "VGPU_TEST_CHILD";

pub fn run_child(test: &str, vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", test, "--ignored", "--test-threads=1"])
        .env(CHILD_MARKER, "1");
    for (name, _) in std::env::vars_os().filter(|(name, _)| {
        name.to_str()
            .is_some_and(|name| name.starts_with("VGPU_") || name == "CUDA_VISIBLE_DEVICES")
    }) {
        command.env_remove(name);
    }
    let output = command
        .envs(vars.iter().copied())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{test}: {stdout}");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test} did not run: {stdout}"
    );
    output
}

pub fn is_child() -> bool {
    std::env::var_os(CHILD_MARKER).is_some()
}

/// For a `child_*` test: whether it was started by its parent. When it was not (`cargo test --
/// --include-ignored`), it says so and is recorded as skipped, not passed: `cargo xtask test`
/// reads the records from the file `VGPU_TEST_SKIPS` names.
pub fn started_by_parent(test: &str) -> bool {
    if is_child() {
        return true;
    }
    vgpu_trace_fixtures::skip_test(test, "runs only when its parent test starts it");
    false
}
