//! Where the installed shims are declared, read the same way by tracing, `doctor` and
//! `resolve`: `--shim cuda=PATH` flags when any is given, else the configuration file
//! (`api = "PATH"` lines; none when it does not exist).
use std::path::Path;

use anyhow::{Context as _, bail};

use super::classify::Api;
use super::fs;

/// Where shims are configured when no `--shim` names them.
pub const SHIMS_CONFIG: &str = "/etc/vgpu-trace/shims.toml";

/// One declared shim, as written (not resolved: each caller resolves in its own view).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    pub api: Api,
    pub path: String,
    /// `--shim`, or the configuration file's path.
    pub source: String,
}

/// The flags when any is given, else the configuration's entries.
pub fn declared(flags: &[String], config: &Path) -> anyhow::Result<Vec<Declared>> {
    if flags.is_empty() {
        from_config(config)
    } else {
        from_flags(flags)
    }
}

/// `cuda=PATH` / `nvml=PATH` flags.
pub fn from_flags(flags: &[String]) -> anyhow::Result<Vec<Declared>> {
    flags
        .iter()
        .map(|flag| {
            let (api, path) = flag
                .split_once('=')
                .with_context(|| format!("--shim {flag:?}: expected cuda=PATH or nvml=PATH"))?;
            Ok(Declared {
                api: Api::parse(api).map_err(anyhow::Error::msg)?,
                path: path.to_string(),
                source: "--shim".into(),
            })
        })
        .collect()
}

/// The configuration file's entries; none if it does not exist.
pub fn from_config(config: &Path) -> anyhow::Result<Vec<Declared>> {
    let source = config.display().to_string();
    read_config(config)?
        .into_iter()
        .map(|(api, path)| {
            Ok(Declared {
                api: Api::parse(&api)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| source.clone())?,
                path,
                source: source.clone(),
            })
        })
        .collect()
}

/// `api = "PATH"` pairs of a configuration file; nothing if the file does not exist. Read
/// without blocking and within a bound: a traced installer may be writing it, and what stands
/// at its path (a FIFO, a device, a huge file) must not stall the trace.
pub fn read_config(config: &Path) -> anyhow::Result<Vec<(String, String)>> {
    const MAX_BYTES: u64 = 1 << 20;
    let file = match fs::open_regular(config, true) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_BYTES + 1), &mut text)
        .with_context(|| format!("reading {}", config.display()))?;
    if text.len() as u64 > MAX_BYTES {
        bail!("{}: over {MAX_BYTES} bytes", config.display());
    }
    parse_config(&text).with_context(|| {
        format!(
            "{}: expected lines like cuda = \"/opt/vgpu/lib/libvgpu-cuda.so\"",
            config.display()
        )
    })
}

/// The `api = "PATH"` pairs of a configuration's text, sorted by api.
pub fn parse_config(text: &str) -> Result<Vec<(String, String)>, toml::de::Error> {
    let table: std::collections::BTreeMap<String, String> = toml::from_str(text)?;
    Ok(table.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_that_is_no_regular_file_is_an_error_not_a_hang() {
        let scratch = tempfile::tempdir().unwrap();
        let fifo = scratch.path().join("shims.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_config(&fifo).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
        assert!(
            read_config(&scratch.path().join("absent.toml"))
                .unwrap()
                .is_empty()
        );
        let big = scratch.path().join("big.toml");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(2 << 20))
            .unwrap();
        assert!(read_config(&big).is_err());
        let good = scratch.path().join("good.toml");
        std::fs::write(&good, "cuda = \"/opt/vgpu/lib/libcuda.so.1\"\n").unwrap();
        assert_eq!(
            read_config(&good).unwrap(),
            [("cuda".to_string(), "/opt/vgpu/lib/libcuda.so.1".to_string())]
        );
    }

    #[test]
    fn flags_win_over_the_config_and_bad_ones_are_errors() {
        let scratch = tempfile::tempdir().unwrap();
        let config = scratch.path().join("shims.toml");
        std::fs::write(&config, "nvml = \"/c/libnvidia-ml.so.1\"\n").unwrap();
        let from_file = declared(&[], &config).unwrap();
        assert_eq!(from_file.len(), 1);
        assert_eq!(
            (from_file[0].api, from_file[0].source.as_str()),
            (Api::Nvml, config.to_str().unwrap())
        );
        let flags = ["cuda=/f/libcuda.so.1".to_string()];
        let from_flags = declared(&flags, &config).unwrap();
        assert_eq!(
            from_flags,
            [Declared {
                api: Api::Cuda,
                path: "/f/libcuda.so.1".into(),
                source: "--shim".into()
            }]
        );
        assert!(declared(&["cuda".to_string()], &config).is_err());
        assert!(declared(&["opencl=/x".to_string()], &config).is_err());
        std::fs::write(&config, "rocm = \"/x\"\n").unwrap();
        assert!(declared(&[], &config).is_err());
    }
}
