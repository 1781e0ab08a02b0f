//! Reading the libraries traced processes name. They are opened without blocking and only when
//! regular (`analysis::fs::open_regular`), and read in blocks, only where `object` looks: the
//! headers, the dynamic section and, when asked, the dynamic symbols, within a byte budget. A
//! 900 MB library costs a few reads; a hostile file can cost at most the budget.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::ops::Range;
use std::path::Path;

use object::ReadRef;

use crate::loader::elf::{self, ElfFacts};
use crate::loader::fs::open_regular;

/// Most bytes read from one file: far above the dynamic symbols of any real library
/// (libcuda's are well under 1 MB), far below what would hurt the tracer.
pub const READ_BUDGET: u64 = 64 << 20;

pub use crate::procfs::FileId;

/// Bytes read at a time: the dynamic symbols and strings of a library lie in a few such
/// blocks, so reading one symbol name after another costs a handful of reads, not one each.
const BLOCK: u64 = 64 << 10;

/// Regions of a file read so far, by (offset, size); boxed, so slices handed out stay put
/// while more are added.
type Regions = HashMap<(u64, u64), Box<[u8]>>;

/// A file read by aligned blocks, kept for the reader's lifetime, within a byte budget.
/// `object` asks for ranges; each is served from the block holding it, or read on its own
/// when it straddles blocks.
struct Blocks {
    file: std::fs::File,
    len: u64,
    regions: RefCell<Regions>,
    budget: Cell<u64>,
}

impl Blocks {
    fn new(file: std::fs::File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            len,
            regions: RefCell::default(),
            budget: Cell::new(READ_BUDGET),
        })
    }

    /// The bytes at `offset..offset + size`, read once.
    fn region(&self, offset: u64, size: u64) -> Result<&[u8], ()> {
        use std::os::unix::fs::FileExt as _;
        let mut regions = self.regions.borrow_mut();
        let region = match regions.entry((offset, size)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let in_file = offset.checked_add(size).is_some_and(|end| end <= self.len);
                if !in_file || size > self.budget.get() {
                    return Err(());
                }
                self.budget.set(self.budget.get() - size);
                let mut buf = vec![0; size as usize].into_boxed_slice();
                self.file.read_exact_at(&mut buf, offset).map_err(|_| ())?;
                e.insert(buf)
            }
        };
        let ptr: *const [u8] = &**region;
        // SAFETY: regions are never removed or moved while `self` lives.
        Ok(unsafe { &*ptr })
    }

    /// The aligned block holding `offset`.
    fn block(&self, offset: u64) -> Result<(&[u8], usize), ()> {
        let start = offset / BLOCK * BLOCK;
        let block = self.region(start, BLOCK.min(self.len.saturating_sub(start)))?;
        Ok((block, (offset - start) as usize))
    }
}

impl<'a> ReadRef<'a> for &'a Blocks {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        let end = offset.checked_add(size).ok_or(())?;
        if end > self.len {
            return Err(());
        }
        if offset / BLOCK == (end - 1) / BLOCK {
            let (block, at) = self.block(offset)?;
            return Ok(&block[at..at + size as usize]);
        }
        self.region(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        // The whole range in the file, as a slice of the file would demand: a string table that
        // runs past the end is malformed, whether or not the string ends inside the file.
        let end = range.end;
        if range.start >= end || end > self.len {
            return Err(());
        }
        // Within the block first; a string running past it is read on its own.
        let (block, at) = self.block(range.start)?;
        let within = &block[at..block.len().min(at + (end - range.start) as usize)];
        if let Some(n) = within.iter().position(|b| *b == delimiter) {
            return Ok(&within[..n]);
        }
        let bytes = self.read_bytes_at(range.start, (end - range.start).min(STRING_MAX))?;
        let n = bytes.iter().position(|b| *b == delimiter).ok_or(())?;
        Ok(&bytes[..n])
    }
}

/// Longest string read across a block boundary.
const STRING_MAX: u64 = 64 << 10;

/// What one file is: its identity and ELF facts.
pub struct ElfFile {
    pub id: FileId,
    pub facts: ElfFacts,
}

/// Reads the ELF facts of the file at `path` (`follow`: whether a final symlink is followed,
/// as /proc/PID/fd/N needs). `symbols`: also the dynamic symbols (exports with file offsets).
pub fn read_elf(path: &Path, follow: bool, symbols: bool) -> anyhow::Result<ElfFile> {
    read_elf_file(open_regular(path, follow)?, symbols)
}

/// As [`read_elf`], from a file opened with `open_regular`.
pub fn read_elf_file(file: std::fs::File, symbols: bool) -> anyhow::Result<ElfFile> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata()?;
    let id = (meta.dev(), meta.ino());
    let blocks = Blocks::new(file)?;
    let facts = if symbols {
        elf::parse(&blocks)
    } else {
        elf::parse_dynamic(&blocks)
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

    /// Found by the `elf` fuzz target: a string table claiming more bytes than the file holds
    /// gave facts from the file but an error from memory.
    #[test]
    fn strings_are_read_as_from_memory() {
        let data = b"libcuda.so.1\0";
        let path = std::env::temp_dir().join(format!("vgpu-files-test-{}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let blocks = Blocks::new(std::fs::File::open(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        for range in [0..13, 5..13, 0..14, 0..100, 5..5, 13..13, 14..20] {
            assert_eq!(
                (&blocks).read_bytes_at_until(range.clone(), 0),
                data.as_slice().read_bytes_at_until(range.clone(), 0),
                "{range:?}"
            );
        }
    }
}
