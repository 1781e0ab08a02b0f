//! ELF facts a loader decides by: identity (class, byte order, machine, type), SONAME, NEEDED,
//! RPATH versus RUNPATH, DF_1_NODEFLIB, and the exported dynamic symbols with their versions.
use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _, Sym as _};
use object::{Endianness, ReadRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Elf32,
    Elf64,
}

/// The first bytes of an ELF file: what ld.so checks before it accepts a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ident {
    pub class: Class,
    pub little_endian: bool,
    /// `e_type`: `ET_DYN` (3) for libraries and PIE executables.
    pub kind: u16,
    /// `e_machine`, e.g. `EM_X86_64` (62).
    pub machine: u16,
}

impl Ident {
    /// Reads the identity from the first 20 bytes; `None` if it is not ELF.
    pub fn parse(head: &[u8]) -> Option<Self> {
        if head.len() < 20 || head[..4] != *b"\x7fELF" {
            return None;
        }
        let class = match head[4] {
            1 => Class::Elf32,
            2 => Class::Elf64,
            _ => return None,
        };
        let little_endian = match head[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let half = |at: usize| {
            let b = [head[at], head[at + 1]];
            if little_endian {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            }
        };
        Some(Self {
            class,
            little_endian,
            kind: half(16),
            machine: half(18),
        })
    }

    /// What this machine's ld.so loads: x86-64, little-endian, 64-bit.
    pub fn native() -> Self {
        Self {
            class: Class::Elf64,
            little_endian: true,
            kind: elf::ET_DYN,
            machine: elf::EM_X86_64,
        }
    }

    /// Why ld.so would skip this file when looking for a library for `want`, if it would.
    pub fn mismatch(&self, want: &Ident) -> Option<&'static str> {
        if self.class != want.class {
            Some("wrong ELF class")
        } else if self.little_endian != want.little_endian {
            Some("ELF file data encoding not little-endian")
        } else if self.machine != want.machine {
            Some("ELF file machine does not match")
        } else if self.kind != elf::ET_DYN {
            Some("only ET_DYN and ET_EXEC can be loaded")
        } else {
            None
        }
    }

    pub fn describe(&self) -> String {
        let class = match self.class {
            Class::Elf32 => "ELF32",
            Class::Elf64 => "ELF64",
        };
        let machine = match self.machine {
            elf::EM_X86_64 => "x86-64".to_string(),
            elf::EM_386 => "i386".to_string(),
            elf::EM_AARCH64 => "aarch64".to_string(),
            other => format!("machine {other}"),
        };
        format!("{class} {machine}")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub name: String,
    /// The symbol version (e.g. `GLIBC_2.2.5`), if versioned.
    pub version: Option<String>,
    /// Not hidden: the version a plain reference binds to.
    pub default: bool,
    /// Where a uprobe goes: the symbol's offset in the file (its address mapped through the
    /// loadable segment holding it); `None` when no segment holds it.
    pub file_offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfFacts {
    pub ident: Ident,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    /// DT_RPATH entries (searched only when there is no DT_RUNPATH).
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    /// DF_1_NODEFLIB: ld.so.cache and the default dirs are not searched for this object's needs.
    pub nodeflib: bool,
    /// Defined global and weak dynamic symbols.
    pub exports: Vec<Export>,
    /// Undefined dynamic symbols: what the object needs from its dependencies.
    pub imports: Vec<String>,
}

impl ElfFacts {
    pub fn exports(&self, name: &str) -> bool {
        self.exports.iter().any(|e| e.name == name)
    }

    /// Where uprobes go for `functions` (name, cookie): one (file offset, cookie) per distinct
    /// offset of each exported one; absent functions give none.
    pub fn probe_points<'a>(
        &self,
        functions: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Vec<(u64, u64)> {
        functions
            .into_iter()
            .flat_map(|(name, cookie)| {
                self.offsets_of(name)
                    .into_iter()
                    .map(move |offset| (offset, cookie))
            })
            .collect()
    }

    /// The distinct file offsets of `name` (one per address its versions point at).
    pub fn offsets_of(&self, name: &str) -> Vec<u64> {
        let mut offsets: Vec<u64> = self
            .exports
            .iter()
            .filter(|e| e.name == name)
            .filter_map(|e| e.file_offset)
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        offsets
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("malformed ELF: {0}")]
    Malformed(#[from] object::read::Error),
}

/// Reads the facts from `data`: a whole file in memory, or a reader that fetches only the
/// ranges asked for (headers, the dynamic section, the dynamic symbols and their versions).
pub fn parse<'data, R: ReadRef<'data>>(data: R) -> Result<ElfFacts, ElfError> {
    parse_with(data, true)
}

/// The facts without the symbol tables (`exports` and `imports` left empty): what a loader
/// decides by, read from the headers and the dynamic section alone.
pub fn parse_dynamic<'data, R: ReadRef<'data>>(data: R) -> Result<ElfFacts, ElfError> {
    parse_with(data, false)
}

fn parse_with<'data, R: ReadRef<'data>>(data: R, symbols: bool) -> Result<ElfFacts, ElfError> {
    let head = data.read_bytes_at(0, 20).map_err(|()| ElfError::NotElf)?;
    let ident = Ident::parse(head).ok_or(ElfError::NotElf)?;
    match ident.class {
        Class::Elf32 => parse_as::<FileHeader32<Endianness>, R>(data, ident, symbols),
        Class::Elf64 => parse_as::<FileHeader64<Endianness>, R>(data, ident, symbols),
    }
}

fn parse_as<'data, H: FileHeader<Endian = Endianness>, R: ReadRef<'data>>(
    data: R,
    ident: Ident,
    symbols: bool,
) -> Result<ElfFacts, ElfError> {
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    // (virtual address, size, file offset) of each loadable segment, for symbol offsets.
    let segments: Vec<(u64, u64, u64)> = header
        .program_headers(endian, data)?
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .map(|p| {
            (
                p.p_vaddr(endian).into(),
                p.p_filesz(endian).into(),
                p.p_offset(endian).into(),
            )
        })
        .collect();
    let file_offset = |addr: u64| {
        segments
            .iter()
            .find(|(vaddr, size, _)| addr >= *vaddr && addr - vaddr < *size)
            .and_then(|(vaddr, _, offset)| (addr - vaddr).checked_add(*offset))
    };
    let mut facts = ElfFacts {
        ident,
        soname: None,
        needed: Vec::new(),
        rpath: Vec::new(),
        runpath: Vec::new(),
        nodeflib: false,
        exports: Vec::new(),
        imports: Vec::new(),
    };
    if let Some((entries, link)) = sections.dynamic(endian, data)? {
        let strings = sections.strings(endian, data, link)?;
        for entry in entries {
            let tag = entry.tag(endian);
            let text = || {
                entry
                    .string(endian, strings)
                    .map(|s| String::from_utf8_lossy(s).into_owned())
            };
            match tag {
                elf::DT_SONAME => facts.soname = Some(text()?),
                elf::DT_NEEDED => facts.needed.push(text()?),
                elf::DT_RPATH => facts.rpath.extend(split_path(&text()?)),
                elf::DT_RUNPATH => facts.runpath.extend(split_path(&text()?)),
                elf::DT_FLAGS_1 => {
                    facts.nodeflib |= entry.val(endian) & u64::from(elf::DF_1_NODEFLIB) != 0
                }
                _ => {}
            }
        }
    }
    if !symbols {
        return Ok(facts);
    }
    let symbols = sections.symbols(endian, data, elf::SHT_DYNSYM)?;
    let versions = sections.versions(endian, data)?;
    for (index, sym) in symbols.enumerate() {
        let bind = sym.st_bind();
        if !(bind == elf::STB_GLOBAL || bind == elf::STB_WEAK) {
            continue;
        }
        let name = String::from_utf8_lossy(sym.name(endian, symbols.strings())?).into_owned();
        if name.is_empty() {
            continue;
        }
        if sym.is_undefined(endian) {
            facts.imports.push(name);
            continue;
        }
        let (version, default) = match &versions {
            Some(table) => {
                let vi = table.version_index(endian, index);
                let version = table
                    .version(vi)?
                    .map(|v| String::from_utf8_lossy(v.name()).into_owned());
                (version, !vi.is_hidden())
            }
            None => (None, true),
        };
        facts.exports.push(Export {
            name,
            version,
            default,
            file_offset: file_offset(sym.st_value(endian).into()),
        });
    }
    Ok(facts)
}

/// A colon-separated search path; empty entries stay (ld.so reads them as the current dir).
pub fn split_path(value: &str) -> Vec<String> {
    value.split(':').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_libc() -> Vec<u8> {
        std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").expect("this machine's libc")
    }

    #[test]
    fn reads_libc_facts() {
        let facts = parse(own_libc().as_slice()).unwrap();
        assert_eq!(facts.ident, Ident::native());
        assert_eq!(facts.soname.as_deref(), Some("libc.so.6"));
        let dlopen: Vec<_> = facts
            .exports
            .iter()
            .filter(|e| e.name == "dlopen")
            .collect();
        assert!(dlopen.iter().any(|e| {
            e.default
                && e.version
                    .as_deref()
                    .is_some_and(|v| v.starts_with("GLIBC_2."))
        }));
    }

    #[test]
    fn function_offsets_are_file_offsets() {
        let libc = own_libc();
        let facts = parse(libc.as_slice()).unwrap();
        let offsets = facts.offsets_of("dlopen");
        // Every version of dlopen in glibc 2.34+ is one function.
        assert_eq!(offsets.len(), 1, "{offsets:?}");
        // A function's first bytes in the file: an endbr64 on CET-enabled glibc, else code.
        let at = offsets[0] as usize;
        assert!(at > 0 && at < libc.len());
        assert!(facts.offsets_of("no_such_function_here").is_empty());
    }

    #[test]
    fn a_range_reader_gives_the_same_facts() {
        let file = std::fs::File::open("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let cache = object::ReadCache::new(file);
        assert_eq!(
            parse(&cache).unwrap(),
            parse(own_libc().as_slice()).unwrap()
        );
    }

    #[test]
    fn identity_and_mismatch() {
        let mut head = [0u8; 20];
        head[..4].copy_from_slice(b"\x7fELF");
        head[4] = 1; // ELF32
        head[5] = 1;
        head[16] = 3; // ET_DYN
        head[18] = 3; // EM_386
        let ident = Ident::parse(&head).unwrap();
        assert_eq!(ident.describe(), "ELF32 i386");
        assert_eq!(ident.mismatch(&Ident::native()), Some("wrong ELF class"));
        assert_eq!(Ident::native().mismatch(&Ident::native()), None);
        assert!(Ident::parse(b"#!/bin/sh\n").is_none());
        assert!(matches!(
            parse(&b"not elf at all, no"[..]),
            Err(ElfError::NotElf)
        ));
    }

    /// Found by the `elf` fuzz target: a loadable segment at a file offset near 2^64 made a
    /// symbol's offset overflow.
    #[test]
    fn segments_past_any_file_give_no_offsets() {
        let mut libc = own_libc();
        let u16_at = |at: usize| u16::from_le_bytes([libc[at], libc[at + 1]]) as usize;
        let phoff = u64::from_le_bytes(libc[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            if libc[ph..ph + 4] == elf::PT_LOAD.to_le_bytes() {
                libc[ph + 8..ph + 16].copy_from_slice(&u64::MAX.to_le_bytes());
            }
        }
        let facts = parse(libc.as_slice()).unwrap();
        assert!(facts.exports("dlopen"));
        assert!(facts.offsets_of("dlopen").is_empty());
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let libc = own_libc();
        for len in [20, 64, 100, 4096] {
            let _ = parse(&libc[..len]);
        }
    }
}
