//! How the dynamic loader of a machine searches: its default directories, the subdirectories
//! it tries in each (glibc-hwcaps levels, legacy tls/platform ones before glibc 2.37), and what
//! `$LIB` and `$PLATFORM` expand to. Parsed from ld.so's own answers (`sysinfo` runs it).
use super::elf::Ident;

/// How this machine's ld.so searches (see `sysinfo` for where the values come from).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub system_dirs: Vec<String>,
    /// Subdirectories tried inside every search directory, best first; `""` is the directory itself.
    pub subdirs: Vec<String>,
    /// glibc-hwcaps levels this CPU supports, best first (for ld.so.cache entries).
    pub hwcaps: Vec<String>,
    /// `$LIB` and `$PLATFORM`.
    pub lib: String,
    pub platform: String,
    /// What a library must be to load here.
    pub ident: Ident,
}

impl Platform {
    /// Debian/Ubuntu x86-64 with glibc ≥ 2.37 on an x86-64-v3 CPU: a sane default when ld.so
    /// cannot be asked.
    pub fn debian_x86_64() -> Self {
        let hwcaps: Vec<String> = ["x86-64-v3", "x86-64-v2"].map(String::from).to_vec();
        let mut subdirs: Vec<String> = hwcaps.iter().map(|h| format!("glibc-hwcaps/{h}")).collect();
        subdirs.push(String::new());
        Self {
            system_dirs: [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib",
                "/usr/lib",
            ]
            .map(String::from)
            .to_vec(),
            subdirs,
            hwcaps,
            lib: "lib/x86_64-linux-gnu".into(),
            platform: "x86_64".into(),
            ident: Ident::native(),
        }
    }
}

/// The directory every probe path starts with; see [`Platform::from_ld_so`].
pub const PROBE_DIR: &str = "/vgpu-trace-probe";

impl Platform {
    /// From `ld.so --list-diagnostics` and the `LD_DEBUG=libs` output of a run with
    /// `LD_LIBRARY_PATH=/vgpu-trace-probe/$LIB`, whose "search path=" line lists every
    /// subdirectory ld.so tries, in order.
    pub fn from_ld_so(diagnostics: &str, debug: &str) -> Option<Self> {
        let value = |line: &str| Some(line.split_once('=')?.1.trim().trim_matches('"').to_string());
        let system_dirs: Vec<String> = diagnostics
            .lines()
            .filter(|l| l.starts_with("path.system_dirs["))
            .filter_map(value)
            .map(|d| d.trim_end_matches('/').to_string())
            .collect();
        let platform = diagnostics
            .lines()
            .find(|l| l.starts_with("dl_platform="))
            .and_then(value)
            .unwrap_or_else(|| "x86_64".into());
        let search = debug
            .lines()
            .find_map(|l| l.split_once("search path=").map(|(_, rest)| rest))?;
        let search = search.split(['\t', ' ', '(']).next()?;
        let dirs: Vec<&str> = search
            .split(':')
            .filter_map(|d| d.strip_prefix(PROBE_DIR)?.strip_prefix('/'))
            .collect();
        let lib = dirs.last()?.to_string();
        let subdirs: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.strip_prefix(lib.as_str())
                    .unwrap_or(d)
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        let hwcaps = subdirs
            .iter()
            .filter_map(|s| s.strip_prefix("glibc-hwcaps/"))
            .map(str::to_string)
            .collect();
        if system_dirs.is_empty() {
            return None;
        }
        Some(Self {
            system_dirs,
            subdirs,
            hwcaps,
            lib,
            platform,
            ident: Ident::native(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_glibc_2_36_prints() {
        let diagnostics = "dl_platform=\"x86_64\"\npath.system_dirs[0x0]=\"/lib/x86_64-linux-gnu/\"\npath.system_dirs[0x1]=\"/usr/lib/\"\n";
        let debug = "     10527:\t search path=/vgpu-trace-probe/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3:\
/vgpu-trace-probe/lib/x86_64-linux-gnu/tls/x86_64:/vgpu-trace-probe/lib/x86_64-linux-gnu\t\t(LD_LIBRARY_PATH)\n";
        let p = Platform::from_ld_so(diagnostics, debug).unwrap();
        assert_eq!(p.system_dirs, ["/lib/x86_64-linux-gnu", "/usr/lib"]);
        assert_eq!(p.lib, "lib/x86_64-linux-gnu");
        assert_eq!(p.subdirs, ["glibc-hwcaps/x86-64-v3", "tls/x86_64", ""]);
        assert_eq!(p.hwcaps, ["x86-64-v3"]);
        assert_eq!(p.platform, "x86_64");
        assert_eq!(Platform::from_ld_so("", debug), None);
    }
}
