//! Just enough of the BTF format to find struct members' byte offsets in the running kernel
//! (`/sys/kernel/btf/vmlinux`), so no `task_struct` layout is compiled in, and the names of
//! its enums' values, which say what its BPF can do (`kernel.rs`). Parsed once per session;
//! each lookup then walks the type table.
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not a BTF blob (bad magic)")]
    BadMagic,
    #[error("BTF data ends early")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
    #[error("struct {0} not found in BTF")]
    NoStruct(String),
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;

/// The type table of a BTF blob: where each type's record starts, and the string section.
/// Records are read where they lie, so parsing the kernel's (about 100k types) allocates
/// one vector.
pub struct Btf<'a> {
    data: &'a [u8],
    /// Byte offset of each type's record, by type id; index 0 is "void".
    types: Vec<u32>,
    strings: &'a [u8],
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    let b = data.get(off..off + 4).ok_or(BtfError::Truncated)?;
    Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

impl<'a> Btf<'a> {
    pub fn parse(btf: &'a [u8]) -> Result<Self, BtfError> {
        if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != 0xeb9f {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(btf, 4)? as usize;
        let type_start = hdr_len + u32_at(btf, 8)? as usize;
        let type_end = type_start + u32_at(btf, 12)? as usize;
        let str_start = hdr_len + u32_at(btf, 16)? as usize;
        let str_len = u32_at(btf, 20)? as usize;
        let strings = btf
            .get(str_start..str_start + str_len)
            .ok_or(BtfError::Truncated)?;
        if type_end > btf.len() {
            return Err(BtfError::Truncated);
        }
        let mut types = vec![0];
        let mut off = type_start;
        while off < type_end {
            types.push(off as u32);
            let info = u32_at(btf, off + 4)?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                1 | 14 | 17 => 4,          // int, var, decl_tag
                3 => 12,                   // array
                4 | 5 | 15 => 12 * vlen,   // struct, union, datasec
                6 | 13 => 8 * vlen,        // enum, func_proto
                19 => 12 * vlen,           // enum64
                2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, qualifiers, func, float, type_tag
                k => return Err(BtfError::UnknownKind(k)),
            };
            off += 12 + extra;
        }
        Ok(Self {
            data: btf,
            types,
            strings,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        &s[..s.iter().position(|b| *b == 0).unwrap_or(s.len())]
    }

    /// (name offset, kind, kind_flag, member count, record offset) of type `id`.
    fn head(&self, id: usize) -> Option<(u32, u32, bool, usize, usize)> {
        let off = *self.types.get(id).filter(|o| **o != 0)? as usize;
        let info = u32_at(self.data, off + 4).ok()?;
        Some((
            u32_at(self.data, off).ok()?,
            (info >> 24) & 0x1f,
            info >> 31 == 1,
            (info & 0xffff) as usize,
            off,
        ))
    }

    /// Byte offset of `member` in `struct_name`, looking through anonymous struct/union
    /// members.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Result<u32, BtfError> {
        let struct_id = (1..self.types.len())
            .find(|&id| {
                self.head(id).is_some_and(|(name, kind, _, vlen, _)| {
                    kind == KIND_STRUCT && vlen > 0 && self.name(name) == struct_name.as_bytes()
                })
            })
            .ok_or_else(|| BtfError::NoStruct(struct_name.into()))?;
        self.find(struct_id, member.as_bytes(), 0)
            .ok_or_else(|| BtfError::NoMember(struct_name.into(), member.into()))
    }

    /// Whether the enum `enum_name` has a value named `value` (e.g. `bpf_func_id` and
    /// `BPF_FUNC_loop`).
    pub fn has_enum_value(&self, enum_name: &str, value: &str) -> bool {
        (1..self.types.len()).any(|id| {
            let Some((name, kind, _, vlen, off)) = self.head(id) else {
                return false;
            };
            let size = match kind {
                KIND_ENUM => 8,
                KIND_ENUM64 => 12,
                _ => return false,
            };
            self.name(name) == enum_name.as_bytes()
                && (0..vlen).any(|i| {
                    u32_at(self.data, off + 12 + size * i)
                        .is_ok_and(|v| self.name(v) == value.as_bytes())
                })
        })
    }

    fn find(&self, id: usize, member: &[u8], depth: u32) -> Option<u32> {
        let (_, kind, kind_flag, vlen, off) = self.head(id)?;
        if depth > 8 || !(kind == KIND_STRUCT || kind == KIND_UNION) {
            return None;
        }
        for i in 0..vlen {
            let m = off + 12 + 12 * i;
            let (m_name, m_type, m_off) = (
                u32_at(self.data, m).ok()?,
                u32_at(self.data, m + 4).ok()?,
                u32_at(self.data, m + 8).ok()?,
            );
            let bits = if kind_flag { m_off & 0xff_ffff } else { m_off };
            if self.name(m_name) == member {
                return Some(bits / 8);
            }
            if m_name == 0
                && let Some(inner) = self.find(m_type as usize, member, depth + 1)
            {
                return Some(bits / 8 + inner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built blob: struct s { int a; union { int b; int c; }; } with an anonymous union
    /// at byte 8, and enum e { E_ONE = 1 }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0e\0E_ONE\0".to_vec();
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // 1: int
        push(1);
        push(1 << 24);
        push(4);
        push(32);
        // 2: struct s, 2 members
        push(5);
        push((4 << 24) | 2);
        push(16);
        push(7); // a
        push(1);
        push(0);
        push(0); // anonymous union at bit 64
        push(3);
        push(64);
        // 3: union, 2 members
        push(0);
        push((5 << 24) | 2);
        push(4);
        push(9); // b
        push(1);
        push(0);
        push(11); // c
        push(1);
        push(0);
        // 4: enum e, 1 value
        push(13);
        push((6 << 24) | 1);
        push(4);
        push(15); // E_ONE
        push(1);
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let b = blob();
        let btf = Btf::parse(&b).unwrap();
        assert_eq!(btf.member_offset("s", "a"), Ok(0));
        assert_eq!(btf.member_offset("s", "c"), Ok(8));
        assert_eq!(
            btf.member_offset("s", "zz"),
            Err(BtfError::NoMember("s".into(), "zz".into()))
        );
        assert_eq!(
            btf.member_offset("t", "a"),
            Err(BtfError::NoStruct("t".into()))
        );
        assert!(matches!(Btf::parse(&b[..10]), Err(BtfError::BadMagic)));
        assert!(btf.has_enum_value("e", "E_ONE"));
        assert!(!btf.has_enum_value("e", "E_TWO") && !btf.has_enum_value("s", "a"));
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no kernel BTF here; skipping");
            return;
        };
        let btf = Btf::parse(&btf).unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(tgid, pid + 4, "tgid follows pid in task_struct");
        for (s, m) in [
            ("task_struct", "exit_code"),
            ("task_struct", "mm"),
            ("task_struct", "signal"),
            ("signal_struct", "live"),
            ("mm_struct", "arg_start"),
            ("mm_struct", "env_end"),
            ("linux_binprm", "filename"),
        ] {
            btf.member_offset(s, m)
                .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
        }
        assert!(btf.has_enum_value("bpf_map_type", "BPF_MAP_TYPE_RINGBUF"));
    }
}
