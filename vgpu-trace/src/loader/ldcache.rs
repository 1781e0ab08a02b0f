//! `/etc/ld.so.cache` as glibc 2.32–2.39 writes it: the "glibc-ld.so.cache1.1" format (possibly
//! after an old "ld.so-1.7.0" block), entries of soname → path, and the glibc-hwcaps extension
//! that marks entries living in `glibc-hwcaps/<level>/` subdirectories.

use std::path::Path;

use super::fs::Fs;

/// Where ld.so reads it.
pub const PATH: &str = "/etc/ld.so.cache";
/// A real cache is a few hundred KiB; what stands at the path is read no further than this.
const MAX_BYTES: usize = 64 << 20;

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;
const OLD_ENTRY: usize = 12;
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;
const EXTENSION_TAG_HWCAPS: u32 = 1;
/// `hwcap` bit marking an index into the glibc-hwcaps subdirectory names.
const HWCAP_EXTENSION: u64 = 1 << 62;
/// `FLAG_ELF_LIBC6 | FLAG_X8664_LIB64`: what x86-64's ld.so accepts.
pub const X86_64_LIBC6: i32 = 0x0303;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub soname: String,
    pub path: String,
    pub flags: i32,
    /// The glibc-hwcaps subdirectory (`x86-64-v3`) the library was found in, if any.
    pub hwcaps: Option<String>,
    /// Legacy hwcap bits (pre-2.37 `tls`/platform subdirectories); 0 for plain entries.
    pub legacy_hwcap: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LdCache {
    /// In file order, which is the order ld.so prefers among equal sonames.
    pub entries: Vec<Entry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("not an ld.so.cache (unknown magic)")]
    BadMagic,
    #[error("ld.so.cache is truncated: {0}")]
    Truncated(&'static str),
    #[error("ld.so.cache string offset {0} is outside the file")]
    BadString(u32),
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

fn string_at(data: &[u8], offset: u32) -> Result<String, CacheError> {
    let tail = data
        .get(offset as usize..)
        .ok_or(CacheError::BadString(offset))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(CacheError::BadString(offset))?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

impl LdCache {
    /// The cache as `fs` sees it (the host, a process's root, an image): opened without
    /// blocking, only when regular, and read within a bound.
    pub fn load(fs: &dyn Fs) -> Result<Self, String> {
        let bytes = fs
            .read(Path::new(PATH), MAX_BYTES)
            .map_err(|e| format!("{PATH}: {e}"))?;
        Self::parse(&bytes).map_err(|e| format!("{PATH}: {e}"))
    }

    pub fn parse(file: &[u8]) -> Result<Self, CacheError> {
        let start = if file.starts_with(NEW_MAGIC) {
            0
        } else if file.starts_with(OLD_MAGIC) {
            // The old block: magic, count, 12-byte entries; the new block follows, 8-aligned.
            let count =
                u32_at(file, OLD_MAGIC.len()).ok_or(CacheError::Truncated("old header"))? as usize;
            let end = OLD_MAGIC.len() + 4 + count * OLD_ENTRY;
            let start = end.next_multiple_of(8);
            if !file.get(start..).is_some_and(|f| f.starts_with(NEW_MAGIC)) {
                return Err(CacheError::BadMagic);
            }
            start
        } else {
            return Err(CacheError::BadMagic);
        };
        // Offsets in the new format count from the new block's first byte.
        let data = &file[start..];
        let nlibs = u32_at(data, 20).ok_or(CacheError::Truncated("header"))? as usize;
        let extension_offset = u32_at(data, 32).ok_or(CacheError::Truncated("header"))?;
        let subdirs = hwcaps_subdirs(data, extension_offset)?;
        // Room for what the data can hold, not for what a hostile header claims.
        let mut entries = Vec::with_capacity(nlibs.min(data.len() / NEW_ENTRY));
        for i in 0..nlibs {
            let at = NEW_HEADER + i * NEW_ENTRY;
            let field = |off| u32_at(data, at + off).ok_or(CacheError::Truncated("entries"));
            let flags = field(0)? as i32;
            let hwcap = u64_at(data, at + 16).ok_or(CacheError::Truncated("entries"))?;
            let (hwcaps, legacy_hwcap) = if hwcap & HWCAP_EXTENSION != 0 {
                (subdirs.get(hwcap as u32 as usize).cloned(), 0)
            } else {
                (None, hwcap)
            };
            entries.push(Entry {
                soname: string_at(data, field(4)?)?,
                path: string_at(data, field(8)?)?,
                flags,
                hwcaps,
                legacy_hwcap,
            });
        }
        Ok(Self { entries })
    }

    /// The path ld.so takes from the cache for `soname`: among x86-64 entries, the one in the
    /// best supported glibc-hwcaps subdirectory (`supported` in priority order), else the first
    /// plain entry.
    pub fn lookup(&self, soname: &str, supported: &[String]) -> Option<&Entry> {
        let matching = || {
            self.entries
                .iter()
                .filter(move |e| e.soname == soname && e.flags == X86_64_LIBC6)
        };
        let best_hwcaps = matching()
            .filter_map(|e| {
                Some((
                    supported
                        .iter()
                        .position(|s| Some(s) == e.hwcaps.as_ref())?,
                    e,
                ))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, e)| e);
        best_hwcaps.or_else(|| matching().find(|e| e.hwcaps.is_none() && e.legacy_hwcap == 0))
    }
}

/// The glibc-hwcaps subdirectory names from the cache extension, if present.
fn hwcaps_subdirs(data: &[u8], extension_offset: u32) -> Result<Vec<String>, CacheError> {
    let at = extension_offset as usize;
    if extension_offset == 0 || u32_at(data, at) != Some(EXTENSION_MAGIC) {
        return Ok(Vec::new());
    }
    let count = u32_at(data, at + 4).ok_or(CacheError::Truncated("extension"))? as usize;
    for i in 0..count.min(64) {
        let section = at + 8 + i * 16;
        let tag = u32_at(data, section).ok_or(CacheError::Truncated("extension"))?;
        if tag != EXTENSION_TAG_HWCAPS {
            continue;
        }
        let offset = u32_at(data, section + 8).ok_or(CacheError::Truncated("extension"))? as usize;
        let size = u32_at(data, section + 12).ok_or(CacheError::Truncated("extension"))? as usize;
        return (0..size / 4)
            .map(|j| {
                let s = u32_at(data, offset + j * 4).ok_or(CacheError::Truncated("hwcaps"))?;
                string_at(data, s)
            })
            .collect();
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reads_a_view_without_blocking() {
        use crate::loader::fs::RootFs;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        assert!(LdCache::load(&RootFs::new(root.path())).is_err(), "absent");
        let fifo = root.path().join("etc/ld.so.cache");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = LdCache::load(&RootFs::new(root.path())).unwrap_err();
        assert!(err.starts_with("/etc/ld.so.cache: "), "{err}");
    }

    /// This machine's cache, checked against what `ldconfig -p` prints from it.
    #[test]
    fn host_cache_matches_ldconfig() {
        let Ok(bytes) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let cache = LdCache::parse(&bytes).unwrap();
        let out = std::process::Command::new("ldconfig")
            .arg("-p")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let listed: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (name, rest) = l.trim().split_once(' ')?;
                Some((name.to_string(), rest.rsplit_once("=> ")?.1.to_string()))
            })
            .collect();
        let parsed: Vec<(String, String)> = cache
            .entries
            .iter()
            .map(|e| (e.soname.clone(), e.path.clone()))
            .collect();
        assert_eq!(parsed, listed);
        let libc = cache.lookup("libc.so.6", &[]).expect("libc in the cache");
        assert!(libc.path.ends_with("/libc.so.6"));
        assert_eq!(cache.lookup("libvgpu-no-such.so.1", &[]), None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(LdCache::parse(b"nope"), Err(CacheError::BadMagic));
        let mut cut = NEW_MAGIC.to_vec();
        cut.extend_from_slice(&[1, 0, 0, 0]);
        assert!(matches!(
            LdCache::parse(&cut),
            Err(CacheError::Truncated(_))
        ));
        if let Ok(bytes) = std::fs::read("/etc/ld.so.cache") {
            for len in [30, 48, 100, bytes.len() / 2] {
                let _ = LdCache::parse(&bytes[..len]);
            }
        }
    }

    #[test]
    fn hwcaps_entries_win_when_supported() {
        let entry = |path: &str, hwcaps: Option<&str>| Entry {
            soname: "libz.so.1".into(),
            path: path.into(),
            flags: X86_64_LIBC6,
            hwcaps: hwcaps.map(str::to_string),
            legacy_hwcap: 0,
        };
        let cache = LdCache {
            entries: vec![
                entry(
                    "/usr/lib/glibc-hwcaps/x86-64-v4/libz.so.1",
                    Some("x86-64-v4"),
                ),
                entry(
                    "/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1",
                    Some("x86-64-v3"),
                ),
                entry("/usr/lib/libz.so.1", None),
            ],
        };
        let v3 = ["x86-64-v3".to_string(), "x86-64-v2".to_string()];
        assert_eq!(
            cache.lookup("libz.so.1", &v3).unwrap().hwcaps.as_deref(),
            Some("x86-64-v3")
        );
        assert_eq!(
            cache.lookup("libz.so.1", &[]).unwrap().path,
            "/usr/lib/libz.so.1"
        );
    }
}
