//! Reading the libraries traced processes name. They are opened without blocking and only when
//! regular (`analysis::fs::open_regular`), and read by range: the headers, the dynamic section
//! and, when asked, the dynamic symbols, within a byte budget. A 900 MB library costs a few
//! reads; a hostile file can cost at most the budget.
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::analysis::elf::{self, ElfFacts};
use crate::analysis::fs::open_regular;

/// Most bytes read from one file: far above the dynamic symbols of any real library
/// (libcuda's are well under 1 MB), far below what would hurt the tracer.
pub const READ_BUDGET: u64 = 64 << 20;

pub use crate::procfs::FileId;

/// A reader that fails once `budget` bytes have been read.
struct Budgeted<R> {
    inner: R,
    budget: u64,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.budget {
            return Err(io::Error::other("read budget exhausted"));
        }
        let n = self.inner.read(buf)?;
        self.budget -= n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Budgeted<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// What one file is: its identity and ELF facts.
pub struct ElfFile {
    pub id: FileId,
    pub facts: ElfFacts,
}

/// Reads the ELF facts of the file at `path` (`follow`: whether a final symlink is followed,
/// as /proc/PID/fd/N needs). `symbols`: also the dynamic symbols (exports with file offsets).
pub fn read_elf(path: &Path, follow: bool, symbols: bool) -> anyhow::Result<ElfFile> {
    use std::os::unix::fs::MetadataExt as _;
    let file = open_regular(path, follow)?;
    let meta = file.metadata()?;
    let id = (meta.dev(), meta.ino());
    let cache = object::ReadCache::new(Budgeted {
        inner: file,
        budget: READ_BUDGET,
    });
    let facts = if symbols {
        elf::parse(&cache)
    } else {
        elf::parse_dynamic(&cache)
    }?;
    Ok(ElfFile { id, facts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_facts_by_range_and_refuses_what_is_not_a_file() {
        let libc = read_elf(Path::new("/lib/x86_64-linux-gnu/libc.so.6"), true, true).unwrap();
        assert_eq!(libc.facts.soname.as_deref(), Some("libc.so.6"));
        assert!(!libc.facts.offsets_of("dlopen").is_empty());
        let dynamic = read_elf(Path::new("/lib/x86_64-linux-gnu/libc.so.6"), true, false).unwrap();
        assert!(dynamic.facts.exports.is_empty());
        assert_eq!(dynamic.id, libc.id);
        assert!(read_elf(Path::new("/dev/zero"), true, false).is_err());
        assert!(read_elf(Path::new("/etc/hostname"), true, false).is_err());
    }
}
