//! ELF facts a loader decides by: identity (class, byte order, machine, type), SONAME, NEEDED,
//! RPATH versus RUNPATH, DF_1_NODEFLIB, and the exported dynamic symbols with their versions.
use object::Endianness;
use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{Dyn as _, FileHeader, Sym as _};

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
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("malformed ELF: {0}")]
    Malformed(#[from] object::read::Error),
}

pub fn parse(data: &[u8]) -> Result<ElfFacts, ElfError> {
    let ident = Ident::parse(data).ok_or(ElfError::NotElf)?;
    match ident.class {
        Class::Elf32 => parse_as::<FileHeader32<Endianness>>(data, ident),
        Class::Elf64 => parse_as::<FileHeader64<Endianness>>(data, ident),
    }
}

fn parse_as<H: FileHeader<Endian = Endianness>>(
    data: &[u8],
    ident: Ident,
) -> Result<ElfFacts, ElfError> {
    let header = H::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
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
        let facts = parse(&own_libc()).unwrap();
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
            parse(b"not elf at all, no"),
            Err(ElfError::NotElf)
        ));
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let libc = own_libc();
        for len in [20, 64, 100, 4096] {
            let _ = parse(&libc[..len]);
        }
    }
}
