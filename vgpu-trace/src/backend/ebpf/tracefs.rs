//! tracefs: find (or mount) it, and read tracepoint record layouts from `format` files.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Returns the tracefs root, mounting it at /sys/kernel/tracing when it is not mounted.
pub fn ensure_mounted() -> anyhow::Result<PathBuf> {
    if let Some(root) = CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
    {
        return Ok(root);
    }
    let target = Path::new(CANDIDATES[0]);
    tracing::info!(
        "tracefs is not mounted; mounting it at {}",
        target.display()
    );
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "tracefs is not mounted and mounting it failed; mount it with \
             `mount -t tracefs nodev {}`",
            target.display()
        )
    })?;
    if !target.join("events").is_dir() {
        bail!(
            "tracefs mounted at {} has no events/ directory",
            target.display()
        );
    }
    Ok(target.to_path_buf())
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Field name → layout, parsed from the text of a `format` file.
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse().ok();
            } else if decl.is_none() && !part.is_empty() {
                decl = Some(part);
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // "const char *const * argv" / "char comm[16]" / "__data_loc char[] filename"
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or(decl);
        let name = name.split('[').next().unwrap_or(name);
        fields.insert(name.to_string(), Field { offset, size });
    }
    fields
}

/// Reads the layout of `category/name`.
pub fn read_format(
    root: &Path,
    category: &str,
    name: &str,
) -> anyhow::Result<HashMap<String, Field>> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading tracepoint layout {}", path.display()))?;
    Ok(parse_format(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec\nID: 312\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n\nprint fmt: \"filename=%s\"\n";

    #[test]
    fn parses_fields_of_every_shape() {
        let f = parse_format(EXEC);
        assert_eq!(f["filename"], Field { offset: 8, size: 4 });
        assert_eq!(
            f["old_pid"],
            Field {
                offset: 16,
                size: 4
            }
        );
        let f = parse_format(
            "\tfield:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;\n\
             \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;",
        );
        assert_eq!(
            f["argv"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(
            f["comm"],
            Field {
                offset: 8,
                size: 16
            }
        );
    }
}
