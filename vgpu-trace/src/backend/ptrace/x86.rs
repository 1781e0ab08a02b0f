//! The first instruction of a probed function, decoded so that the tracer can carry it out
//! itself. A breakpoint replaces that instruction's first byte for good: a thread that hits it
//! has the instruction emulated (registers, flags, stack and memory changed as the CPU would
//! have) and goes on after it. Nothing is ever put back while threads run, so no thread can
//! run past a breakpoint unseen, or run one twice.
//!
//! Function entries are made of few kinds of instruction: stack frame set-up, a register saved
//! to the stack, a load of a global or of an argument's field, a test or comparison of an
//! argument (`test rdi, rdi`; flags are then live and set exactly), a pointer argument zeroed,
//! a jump to the real body. Those are decoded here; a function whose entry is anything else is
//! not probed, and the user is told which.

/// General purpose registers in instruction-encoding order (rax, rcx, rdx, rbx, rsp, rbp,
/// rsi, rdi, r8..r15).
pub type Reg = u8;

const RSP: Reg = 4;

/// A memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// `[rip + disp]`, rip being the next instruction's address.
    Rip(i32),
    /// `[reg + disp]`.
    Base { reg: Reg, disp: i32 },
    /// `fs:[disp]`: thread-local storage, as glibc before 2.34 starts `write` with
    /// (`mov %fs:0x18,%eax`, a cancellation check).
    Fs(i32),
}

/// What a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    Reg(Reg),
    /// Sign-extended to the operand size.
    Imm(i32),
}

/// What the entry instruction does, and its length. `size` is the operand size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// No effect on registers or memory (endbr64, nop).
    Skip { len: u8 },
    /// `push reg`.
    Push { reg: Reg, len: u8 },
    /// `sub rsp, imm`.
    SubRsp { imm: u32, len: u8 },
    /// `mov dst, src` (64-bit, or 32-bit zero-extending).
    MovReg {
        dst: Reg,
        src: Reg,
        wide: bool,
        len: u8,
    },
    /// `mov reg, imm32` (zero-extending), `xor r32, r32` (imm 0).
    SetReg { reg: Reg, imm: u32, len: u8 },
    /// `mov reg, [mem]` (8 bytes, or 4 zero-extended).
    Load {
        reg: Reg,
        addr: Addr,
        size: u8,
        len: u8,
    },
    /// `mov [mem], reg|imm`: 8 bytes anywhere; 4 only to the stack, where no other thread
    /// writes the other half of the word the tracer rewrites.
    Store {
        addr: Addr,
        src: Src,
        size: u8,
        len: u8,
    },
    /// `lea reg, [mem]`.
    Lea { reg: Reg, addr: Addr, len: u8 },
    /// `test a, b` between registers.
    Test { a: Reg, b: Reg, size: u8, len: u8 },
    /// `cmp reg, b` with a register or an immediate.
    CmpReg { a: Reg, b: Src, size: u8, len: u8 },
    /// `cmp [mem], imm` (1, 4 or 8 bytes).
    CmpMem {
        addr: Addr,
        imm: i32,
        size: u8,
        len: u8,
    },
    /// `jmp rel`.
    Jump { disp: i32, len: u8 },
    /// `jmp [rip + disp]` (a jump through a pointer, as in PLT-like stubs).
    JumpRipRel { disp: i32, len: u8 },
    /// `ret` (or `rep ret`): an empty function, such as ld.so's `_dl_debug_state`.
    Ret { len: u8 },
}

impl Instr {
    pub fn len(self) -> u8 {
        match self {
            Self::Skip { len }
            | Self::Push { len, .. }
            | Self::SubRsp { len, .. }
            | Self::MovReg { len, .. }
            | Self::SetReg { len, .. }
            | Self::Load { len, .. }
            | Self::Store { len, .. }
            | Self::Lea { len, .. }
            | Self::Test { len, .. }
            | Self::CmpReg { len, .. }
            | Self::CmpMem { len, .. }
            | Self::Jump { len, .. }
            | Self::JumpRipRel { len, .. }
            | Self::Ret { len } => len,
        }
    }
}

fn i32_at(code: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(code.get(at..at + 4)?.try_into().ok()?))
}

/// The memory operand whose ModRM byte is at `at` (REX.B in `b`): the operand and the bytes
/// it takes (ModRM, SIB, displacement). Only a base register (rsp and r12 through a SIB byte
/// without index) or rip; never an index.
fn memory(code: &[u8], at: usize, b: u8) -> Option<(Addr, u8)> {
    let modrm = *code.get(at)?;
    let (mode, rm) = (modrm >> 6, modrm & 7);
    let (base, disp_at) = match (mode, rm) {
        (3, _) => return None,
        (0, 5) => return Some((Addr::Rip(i32_at(code, at + 1)?), 5)),
        (_, 4) => {
            let sib = *code.get(at + 1)?;
            // No index (4), scale 1, and a base that is a register (not disp32-only).
            if sib >> 3 != 0b00_100 || (mode == 0 && sib & 7 == 5) {
                return None;
            }
            ((sib & 7) | (b << 3), at + 2)
        }
        _ => (rm | (b << 3), at + 1),
    };
    let (disp, disp_len) = match mode {
        0 => (0, 0),
        1 => (*code.get(disp_at)? as i8 as i32, 1),
        _ => (i32_at(code, disp_at)?, 4),
    };
    Some((
        Addr::Base { reg: base, disp },
        (disp_at - at) as u8 + disp_len,
    ))
}

/// The REX prefix at the start of `code` (0 without one), and where the opcode is.
fn rex_prefix(code: &[u8]) -> Option<(u8, usize)> {
    Some(match code.first()? {
        b @ 0x40..=0x4f => (*b, 1),
        _ => (0, 0),
    })
}

/// After an FS prefix: only `mov reg, fs:[disp32]` (8b, ModRM with SIB, SIB 0x25).
fn decode_fs(code: &[u8]) -> Option<Instr> {
    let (rex, at) = rex_prefix(code)?;
    let modrm = *code.get(at + 1)?;
    if code.get(at) != Some(&0x8b) || modrm & 0xc7 != 0x04 || code.get(at + 2) != Some(&0x25) {
        return None;
    }
    Some(Instr::Load {
        reg: ((modrm >> 3) & 7) | (((rex >> 2) & 1) << 3),
        addr: Addr::Fs(i32_at(code, at + 3)?),
        size: if rex & 8 != 0 { 8 } else { 4 },
        len: 1 + at as u8 + 7,
    })
}

/// Decodes the instruction at the start of `code`, if it is one the tracer can emulate.
pub fn decode(code: &[u8]) -> Option<Instr> {
    if code.first() == Some(&0x64) {
        return decode_fs(&code[1..]);
    }
    let (rex, op_at) = rex_prefix(code)?;
    let (w, r, b) = (rex & 8 != 0, (rex >> 2) & 1, rex & 1);
    let size = if w { 8 } else { 4 };
    let op = *code.get(op_at)?;
    let modrm = code.get(op_at + 1).copied();
    let after_op = op_at as u8 + 1;
    // (mod, reg, rm) of the ModRM byte, with the REX extensions.
    let fields = modrm.map(|m| (m >> 6, ((m >> 3) & 7) | (r << 3), (m & 7) | (b << 3)));
    let registers = fields.is_some_and(|f| f.0 == 3);
    let mem = || memory(code, op_at + 1, b);
    let stack_or_wide = |addr: Addr| w || matches!(addr, Addr::Base { reg: RSP, .. });
    match (rex, op) {
        (0, 0xf3) if code.get(1..4) == Some(&[0x0f, 0x1e, 0xfa]) => Some(Instr::Skip { len: 4 }),
        (0, 0x90) => Some(Instr::Skip { len: 1 }),
        (0, 0xc3) => Some(Instr::Ret { len: 1 }),
        (0, 0xf3) if code.get(1) == Some(&0xc3) => Some(Instr::Ret { len: 2 }),
        (_, 0x50..=0x57) if !w => Some(Instr::Push {
            reg: (op - 0x50) | (b << 3),
            len: after_op,
        }),
        (_, 0x83) if w && modrm == Some(0xec) => Some(Instr::SubRsp {
            imm: *code.get(op_at + 2)? as i8 as i32 as u32,
            len: after_op + 2,
        }),
        (_, 0x81) if w && modrm == Some(0xec) => Some(Instr::SubRsp {
            imm: i32_at(code, op_at + 2)? as u32,
            len: after_op + 5,
        }),
        // mov r/m, reg and mov reg, r/m between registers.
        (_, 0x89 | 0x8b) if registers => {
            let (_, reg, rm) = fields?;
            let (dst, src) = if op == 0x89 { (rm, reg) } else { (reg, rm) };
            Some(Instr::MovReg {
                dst,
                src,
                wide: w,
                len: after_op + 1,
            })
        }
        (_, 0x31 | 0x33) if !w && registers && fields?.1 == fields?.2 => Some(Instr::SetReg {
            reg: fields?.1,
            imm: 0,
            len: after_op + 1,
        }),
        (_, 0xb8..=0xbf) if !w => Some(Instr::SetReg {
            reg: (op - 0xb8) | (b << 3),
            imm: i32_at(code, after_op as usize)? as u32,
            len: after_op + 4,
        }),
        (_, 0x8b) => {
            let (addr, n) = mem()?;
            Some(Instr::Load {
                reg: fields?.1,
                addr,
                size,
                len: after_op + n,
            })
        }
        (_, 0x89) => {
            let (addr, n) = mem()?;
            stack_or_wide(addr).then_some(Instr::Store {
                addr,
                src: Src::Reg(fields?.1),
                size,
                len: after_op + n,
            })
        }
        (_, 0xc7) if fields?.1 & 7 == 0 => {
            let (addr, n) = mem()?;
            stack_or_wide(addr).then_some(Instr::Store {
                addr,
                src: Src::Imm(i32_at(code, (after_op + n) as usize)?),
                size,
                len: after_op + n + 4,
            })
        }
        (_, 0x8d) if w => {
            let (addr, n) = mem()?;
            Some(Instr::Lea {
                reg: fields?.1,
                addr,
                len: after_op + n,
            })
        }
        (_, 0x85) if registers => Some(Instr::Test {
            a: fields?.2,
            b: fields?.1,
            size,
            len: after_op + 1,
        }),
        (_, 0x39 | 0x3b) if registers => {
            let (_, reg, rm) = fields?;
            let (a, b) = if op == 0x39 { (rm, reg) } else { (reg, rm) };
            Some(Instr::CmpReg {
                a,
                b: Src::Reg(b),
                size,
                len: after_op + 1,
            })
        }
        // cmp r/m, imm8 (83 /7) or imm32 (81 /7).
        (_, 0x83 | 0x81) if fields?.1 & 7 == 7 => {
            let imm_len = if op == 0x83 { 1 } else { 4 };
            let (target, n) = if registers {
                (None, 1)
            } else {
                let (addr, n) = mem()?;
                (Some(addr), n)
            };
            let at = (after_op + n) as usize;
            let imm = if imm_len == 1 {
                *code.get(at)? as i8 as i32
            } else {
                i32_at(code, at)?
            };
            let len = after_op + n + imm_len;
            Some(match target {
                None => Instr::CmpReg {
                    a: fields?.2,
                    b: Src::Imm(imm),
                    size,
                    len,
                },
                Some(addr) => Instr::CmpMem {
                    addr,
                    imm,
                    size,
                    len,
                },
            })
        }
        // cmp byte [mem], imm8.
        (_, 0x80) if !registers && fields?.1 & 7 == 7 => {
            let (addr, n) = mem()?;
            Some(Instr::CmpMem {
                addr,
                imm: *code.get((after_op + n) as usize)? as i8 as i32,
                size: 1,
                len: after_op + n + 1,
            })
        }
        (0, 0xe9) => Some(Instr::Jump {
            disp: i32_at(code, 1)?,
            len: 5,
        }),
        (0, 0xeb) => Some(Instr::Jump {
            disp: *code.get(1)? as i8 as i32,
            len: 2,
        }),
        (0, 0xff) if modrm == Some(0x25) => Some(Instr::JumpRipRel {
            disp: i32_at(code, 2)?,
            len: 6,
        }),
        _ => None,
    }
}

/// The registers the emulation reads and writes, by encoding number.
pub fn reg_mut(regs: &mut libc::user_regs_struct, reg: Reg) -> &mut u64 {
    match reg {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    }
}

/// Memory the emulation touches in the tracee.
pub trait Memory {
    /// The 8 bytes at `addr`.
    fn load(&mut self, addr: u64) -> Option<u64>;
    /// The `size` (1 or 4) bytes at `addr`, zero-extended: no more are read, as they may lie
    /// past the end of a mapping.
    fn load_small(&mut self, addr: u64, size: u8) -> Option<u64>;
    /// Writes the 8 bytes at `addr`.
    fn store(&mut self, addr: u64, value: u64) -> Option<()>;
}

const CF: u64 = 0x1;
const PF: u64 = 0x4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;

fn mask(size: u8) -> u64 {
    if size == 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// The flags `res` (already cut to `size`) sets in common: zero, sign, parity.
fn result_flags(res: u64, size: u8) -> u64 {
    let mut flags = 0;
    if res == 0 {
        flags |= ZF;
    }
    if res >> (size * 8 - 1) & 1 == 1 {
        flags |= SF;
    }
    if (res as u8).count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    flags
}

/// `rflags` after `test a, b`: carry and overflow cleared (the adjust flag is undefined; it
/// is cleared too).
fn test_flags(rflags: u64, a: u64, b: u64, size: u8) -> u64 {
    (rflags & !(CF | PF | AF | ZF | SF | OF)) | result_flags(a & b & mask(size), size)
}

/// `rflags` after `cmp a, b` (a − b).
fn cmp_flags(rflags: u64, a: u64, b: u64, size: u8) -> u64 {
    let (a, b) = (a & mask(size), b & mask(size));
    let res = a.wrapping_sub(b) & mask(size);
    let top = size * 8 - 1;
    let mut flags = result_flags(res, size);
    if a < b {
        flags |= CF;
    }
    if ((a ^ b) & (a ^ res)) >> top & 1 == 1 {
        flags |= OF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        flags |= AF;
    }
    (rflags & !(CF | PF | AF | ZF | SF | OF)) | flags
}

/// Carries out `instr`, found at `at`, on `regs` (whose `rip` is left after it).
pub fn emulate(
    instr: Instr,
    at: u64,
    regs: &mut libc::user_regs_struct,
    mem: &mut impl Memory,
) -> Option<()> {
    let next = at.wrapping_add(u64::from(instr.len()));
    let rel = |disp: i32| next.wrapping_add(disp as i64 as u64);
    let address = |regs: &mut libc::user_regs_struct, addr: Addr| match addr {
        Addr::Rip(disp) => rel(disp),
        Addr::Base { reg, disp } => reg_mut(regs, reg).wrapping_add(disp as i64 as u64),
        Addr::Fs(disp) => regs.fs_base.wrapping_add(disp as i64 as u64),
    };
    let load = |mem: &mut _, addr: u64, size: u8| match size {
        8 => Memory::load(mem, addr),
        _ => Memory::load_small(mem, addr, size),
    };
    let value = |regs: &mut libc::user_regs_struct, src: Src| match src {
        Src::Reg(reg) => *reg_mut(regs, reg),
        Src::Imm(imm) => imm as i64 as u64,
    };
    regs.rip = next;
    match instr {
        Instr::Skip { .. } => {}
        Instr::Push { reg, .. } => {
            let value = *reg_mut(regs, reg);
            let sp = regs.rsp.wrapping_sub(8);
            mem.store(sp, value)?;
            regs.rsp = sp;
        }
        Instr::SubRsp { imm, .. } => regs.rsp = regs.rsp.wrapping_sub(imm as i32 as i64 as u64),
        Instr::MovReg { dst, src, wide, .. } => {
            let value = *reg_mut(regs, src);
            *reg_mut(regs, dst) = if wide { value } else { value & 0xffff_ffff };
        }
        Instr::SetReg { reg, imm, .. } => *reg_mut(regs, reg) = u64::from(imm),
        Instr::Load {
            reg, addr, size, ..
        } => {
            let from = address(regs, addr);
            *reg_mut(regs, reg) = load(mem, from, size)?;
        }
        Instr::Store {
            addr, src, size, ..
        } => {
            let to = address(regs, addr);
            let value = value(regs, src) & mask(size);
            let word = if size == 8 {
                value
            } else {
                (mem.load(to)? & !mask(size)) | value
            };
            mem.store(to, word)?;
        }
        Instr::Lea { reg, addr, .. } => *reg_mut(regs, reg) = address(regs, addr),
        Instr::Test { a, b, size, .. } => {
            let (a, b) = (*reg_mut(regs, a), *reg_mut(regs, b));
            regs.eflags = test_flags(regs.eflags, a, b, size);
        }
        Instr::CmpReg { a, b, size, .. } => {
            let (a, b) = (*reg_mut(regs, a), value(regs, b));
            regs.eflags = cmp_flags(regs.eflags, a, b, size);
        }
        Instr::CmpMem {
            addr, imm, size, ..
        } => {
            let a = load(mem, address(regs, addr), size)?;
            regs.eflags = cmp_flags(regs.eflags, a, imm as i64 as u64, size);
        }
        Instr::Jump { disp, .. } => regs.rip = rel(disp),
        Instr::JumpRipRel { disp, .. } => regs.rip = mem.load(rel(disp))?,
        Instr::Ret { .. } => {
            regs.rip = mem.load(regs.rsp)?;
            regs.rsp = regs.rsp.wrapping_add(8);
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Mem(HashMap<u64, u64>);

    impl Memory for Mem {
        fn load(&mut self, addr: u64) -> Option<u64> {
            self.0.get(&addr).copied()
        }
        fn load_small(&mut self, addr: u64, size: u8) -> Option<u64> {
            Some(self.0.get(&addr)? & mask(size))
        }
        fn store(&mut self, addr: u64, value: u64) -> Option<()> {
            self.0.insert(addr, value);
            Some(())
        }
    }

    fn regs() -> libc::user_regs_struct {
        // SAFETY: plain integers; all zero is a valid value.
        let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        r.rsp = 0x7000;
        r.rbx = 0xb;
        r.rbp = 0xbb;
        r.r12 = 0x12;
        r
    }

    #[test]
    fn decodes_the_entries_found_in_libc_and_shims() {
        use Instr::*;
        let cases: &[(&[u8], Instr)] = &[
            (&[0xf3, 0x0f, 0x1e, 0xfa], Skip { len: 4 }),
            (&[0xc3], Ret { len: 1 }),
            (
                &[0x64, 0x8b, 0x04, 0x25, 0x18, 0, 0, 0],
                Load {
                    reg: 0,
                    addr: Addr::Fs(0x18),
                    size: 4,
                    len: 8,
                },
            ),
            (
                &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0],
                Load {
                    reg: 0,
                    addr: Addr::Fs(0x28),
                    size: 8,
                    len: 9,
                },
            ),
            (&[0xf3, 0xc3], Ret { len: 2 }),
            (&[0x53], Push { reg: 3, len: 1 }),
            (&[0x55], Push { reg: 5, len: 1 }),
            (&[0x50], Push { reg: 0, len: 1 }),
            (&[0x41, 0x54], Push { reg: 12, len: 2 }),
            (&[0x41, 0x57], Push { reg: 15, len: 2 }),
            (&[0x48, 0x83, 0xec, 0x30], SubRsp { imm: 0x30, len: 4 }),
            (
                &[0x48, 0x81, 0xec, 0x00, 0x01, 0, 0],
                SubRsp { imm: 0x100, len: 7 },
            ),
            (
                &[0x48, 0x89, 0xe5],
                MovReg {
                    dst: 5,
                    src: 4,
                    wide: true,
                    len: 3,
                },
            ),
            (
                // mov 0x14e1c1(%rip),%rdx: glibc's dlclose.
                &[0x48, 0x8b, 0x15, 0xc1, 0xe1, 0x14, 0x00],
                Load {
                    reg: 2,
                    addr: Addr::Rip(0x14e1c1),
                    size: 8,
                    len: 7,
                },
            ),
            (
                &[0x4c, 0x8d, 0x05, 0x10, 0, 0, 0],
                Lea {
                    reg: 8,
                    addr: Addr::Rip(0x10),
                    len: 7,
                },
            ),
            (
                // mov 0x8(%rdi),%rax
                &[0x48, 0x8b, 0x47, 0x08],
                Load {
                    reg: 0,
                    addr: Addr::Base { reg: 7, disp: 8 },
                    size: 8,
                    len: 4,
                },
            ),
            (
                // mov %rbx,-0x10(%rsp): a register saved below the stack pointer.
                &[0x48, 0x89, 0x5c, 0x24, 0xf0],
                Store {
                    addr: Addr::Base { reg: 4, disp: -16 },
                    src: Src::Reg(3),
                    size: 8,
                    len: 5,
                },
            ),
            (
                // mov %edi,0xc(%rsp)
                &[0x89, 0x7c, 0x24, 0x0c],
                Store {
                    addr: Addr::Base { reg: 4, disp: 12 },
                    src: Src::Reg(7),
                    size: 4,
                    len: 4,
                },
            ),
            (
                // movq $0x0,(%rdi): the lab's cuGetExportTable.
                &[0x48, 0xc7, 0x07, 0, 0, 0, 0],
                Store {
                    addr: Addr::Base { reg: 7, disp: 0 },
                    src: Src::Imm(0),
                    size: 8,
                    len: 7,
                },
            ),
            (
                // test %edi,%edi: the lab's cuInit.
                &[0x85, 0xff],
                Test {
                    a: 7,
                    b: 7,
                    size: 4,
                    len: 2,
                },
            ),
            (
                &[0x48, 0x85, 0xff],
                Test {
                    a: 7,
                    b: 7,
                    size: 8,
                    len: 3,
                },
            ),
            (
                // cmp $0x1,%esi
                &[0x83, 0xfe, 0x01],
                CmpReg {
                    a: 6,
                    b: Src::Imm(1),
                    size: 4,
                    len: 3,
                },
            ),
            (
                // cmp %rsi,%rdi
                &[0x48, 0x39, 0xf7],
                CmpReg {
                    a: 7,
                    b: Src::Reg(6),
                    size: 8,
                    len: 3,
                },
            ),
            (
                // cmpb $0x0,0x100(%rip)
                &[0x80, 0x3d, 0x00, 0x01, 0, 0, 0x00],
                CmpMem {
                    addr: Addr::Rip(0x100),
                    imm: 0,
                    size: 1,
                    len: 7,
                },
            ),
            (
                // cmpl $0x3,0x20(%r12)
                &[0x41, 0x83, 0x7c, 0x24, 0x20, 0x03],
                CmpMem {
                    addr: Addr::Base {
                        reg: 12,
                        disp: 0x20,
                    },
                    imm: 3,
                    size: 4,
                    len: 6,
                },
            ),
            (
                &[0x31, 0xc0],
                SetReg {
                    reg: 0,
                    imm: 0,
                    len: 2,
                },
            ),
            (
                &[0xb8, 1, 0, 0, 0],
                SetReg {
                    reg: 0,
                    imm: 1,
                    len: 5,
                },
            ),
            (&[0xe9, 0xfb, 0xff, 0xff, 0xff], Jump { disp: -5, len: 5 }),
            (&[0xeb, 0x10], Jump { disp: 16, len: 2 }),
            (&[0xff, 0x25, 8, 0, 0, 0], JumpRipRel { disp: 8, len: 6 }),
        ];
        for (code, want) in cases {
            assert_eq!(decode(code), Some(*want), "{code:02x?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_emulate() {
        for code in [
            &[0xe8, 0, 0, 0, 0][..],               // call
            &[0x48, 0x8b, 0x04, 0xc7],             // mov (%rdi,%rax,8),%rax: an index
            &[0x89, 0x07],                         // mov %eax,(%rdi): half a word, not the stack
            &[0x64, 0x48, 0x8b, 0x04, 0x25],       // fs-relative load, cut short
            &[0x64, 0x89, 0x04, 0x25, 0, 0, 0, 0], // fs-relative store
            &[0x66, 0x85, 0xff],                   // 16-bit test
            &[0x84, 0xc0],                         // 8-bit test
            &[0x48],                               // cut short
            &[],
        ] {
            assert_eq!(decode(code), None, "{code:02x?}");
        }
    }

    #[test]
    fn emulation_moves_registers_and_stack_as_the_cpu_would() {
        let mut mem = Mem::default();
        let mut r = regs();
        emulate(decode(&[0x41, 0x54]).unwrap(), 0x1000, &mut r, &mut mem).unwrap();
        assert_eq!((r.rip, r.rsp, mem.0[&0x6ff8]), (0x1002, 0x6ff8, 0x12));
        emulate(
            decode(&[0x48, 0x83, 0xec, 0x30]).unwrap(),
            0x1002,
            &mut r,
            &mut mem,
        )
        .unwrap();
        assert_eq!((r.rip, r.rsp), (0x1006, 0x6fc8));
        emulate(
            decode(&[0x48, 0x89, 0xe5]).unwrap(),
            0x1006,
            &mut r,
            &mut mem,
        )
        .unwrap();
        assert_eq!(r.rbp, 0x6fc8);
        mem.0.insert(0x2000 + 7 + 0x10, 0xdead);
        let load = decode(&[0x48, 0x8b, 0x15, 0x10, 0, 0, 0]).unwrap();
        emulate(load, 0x2000, &mut r, &mut mem).unwrap();
        assert_eq!((r.rdx, r.rip), (0xdead, 0x2007));
        mem.0.insert(0x3000 + 6 + 8, 0x4444);
        emulate(
            decode(&[0xff, 0x25, 8, 0, 0, 0]).unwrap(),
            0x3000,
            &mut r,
            &mut mem,
        )
        .unwrap();
        assert_eq!(r.rip, 0x4444);
        r.rax = u64::MAX;
        emulate(decode(&[0x31, 0xc0]).unwrap(), 0x5000, &mut r, &mut mem).unwrap();
        assert_eq!(r.rax, 0);
        // A thread-local load reads from the thread's fs base.
        r.fs_base = 0x8000;
        mem.0.insert(0x8018, 7);
        emulate(
            decode(&[0x64, 0x8b, 0x04, 0x25, 0x18, 0, 0, 0]).unwrap(),
            0x5002,
            &mut r,
            &mut mem,
        )
        .unwrap();
        assert_eq!((r.rax, r.rip), (7, 0x500a));
        // `ret` pops the caller's address.
        let sp = r.rsp;
        mem.0.insert(sp, 0x6666);
        emulate(decode(&[0xc3]).unwrap(), 0x5002, &mut r, &mut mem).unwrap();
        assert_eq!((r.rip, r.rsp), (0x6666, sp + 8));
    }

    #[test]
    fn stores_and_loads_go_where_the_cpu_puts_them() {
        let mut mem = Mem::default();
        let mut r = regs();
        r.rdi = 0x9000;
        mem.0.insert(0x9008, 0x77);
        emulate(
            decode(&[0x48, 0x8b, 0x47, 0x08]).unwrap(),
            0,
            &mut r,
            &mut mem,
        )
        .unwrap();
        assert_eq!(r.rax, 0x77);
        mem.0.insert(0x9000, 0x1234);
        let zero = decode(&[0x48, 0xc7, 0x07, 0, 0, 0, 0]).unwrap();
        emulate(zero, 0, &mut r, &mut mem).unwrap();
        assert_eq!(mem.0[&0x9000], 0);
        // A 4-byte store keeps the word's other half.
        mem.0.insert(0x700c, 0xaaaa_bbbb_cccc_dddd);
        r.rdi = 0x1111_2222_3333_4444;
        emulate(
            decode(&[0x89, 0x7c, 0x24, 0x0c]).unwrap(),
            0,
            &mut r,
            &mut mem,
        )
        .unwrap();
        assert_eq!(mem.0[&0x700c], 0xaaaa_bbbb_3333_4444);
    }

    /// The flags the host CPU sets for `cmp a, b` and `test a, b` (64- and 32-bit).
    fn cpu_flags(a: u64, b: u64) -> [u64; 4] {
        let (mut cmp64, mut cmp32, mut test64, mut test32): (u64, u64, u64, u64);
        // SAFETY: compares registers and reads the flags through the stack; nothing else.
        unsafe {
            std::arch::asm!(
                "cmp {a}, {b}", "pushfq", "pop {c64}",
                "cmp {a:e}, {b:e}", "pushfq", "pop {c32}",
                "test {a}, {b}", "pushfq", "pop {t64}",
                "test {a:e}, {b:e}", "pushfq", "pop {t32}",
                a = in(reg) a, b = in(reg) b,
                c64 = out(reg) cmp64, c32 = out(reg) cmp32,
                t64 = out(reg) test64, t32 = out(reg) test32,
            );
        }
        [cmp64, cmp32, test64, test32]
    }

    #[test]
    fn flags_are_the_cpus_own() {
        let all = CF | PF | AF | ZF | SF | OF;
        let values = [
            0,
            1,
            2,
            5,
            0x7f,
            0x80,
            0xff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            0x1234_5678_9abc_def0,
        ];
        for &a in &values {
            for &b in &values {
                let cpu = cpu_flags(a, b);
                let ours = [
                    cmp_flags(0, a, b, 8),
                    cmp_flags(0, a, b, 4),
                    test_flags(0, a, b, 8),
                    test_flags(0, a, b, 4),
                ];
                for (i, (cpu, ours)) in cpu.iter().zip(ours).enumerate() {
                    // The adjust flag after `test` is undefined.
                    let defined = if i >= 2 { all & !AF } else { all };
                    assert_eq!(cpu & defined, ours & defined, "{a:#x} {b:#x} case {i}");
                }
            }
        }
    }
}
