//! What this machine's dynamic loader does, asked of ld.so itself: its default directories
//! (`--list-diagnostics`) and the subdirectories and `$LIB` it searches (one `LD_DEBUG=libs`
//! run of /bin/true with a probe directory on LD_LIBRARY_PATH).
use std::process::Command;

use crate::loader::platform::{PROBE_DIR, Platform};

const RTLD: &str = "/lib64/ld-linux-x86-64.so.2";

/// The host's loader platform, or a Debian/Ubuntu default when ld.so cannot be asked.
pub fn loader_platform() -> Platform {
    let diagnostics = Command::new(RTLD).arg("--list-diagnostics").output();
    let debug = Command::new("/bin/true")
        .env("LD_DEBUG", "libs")
        .env("LD_LIBRARY_PATH", format!("{PROBE_DIR}/$LIB"))
        .output();
    match (diagnostics, debug) {
        (Ok(d), Ok(t)) => Platform::from_ld_so(
            &String::from_utf8_lossy(&d.stdout),
            &String::from_utf8_lossy(&t.stderr),
        ),
        _ => None,
    }
    .unwrap_or_else(|| {
        tracing::debug!("could not ask {RTLD}; assuming Debian/Ubuntu x86-64 search rules");
        Platform::debian_x86_64()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_answers() {
        let p = super::loader_platform();
        assert!(p.system_dirs.iter().any(|d| d.ends_with("lib")), "{p:?}");
        assert_eq!(p.subdirs.last().map(String::as_str), Some(""));
    }
}
