//! The first instruction of a probed function, decoded so that the tracer can carry it out
//! itself. A breakpoint replaces that instruction's first byte for good: a thread that hits it
//! has the instruction emulated (registers and stack changed as the CPU would have) and goes on
//! after it. Nothing is ever put back while threads run, so no thread can run past a breakpoint
//! unseen, or run one twice.
//!
//! Function entries are made of few instructions (stack frame set-up, a load of a global, a
//! jump to the real body); those are decoded here. Flags are not emulated: at a function's
//! entry they are dead under the System V ABI, and no compiler branches on the flags of a
//! `sub rsp` or a `xor reg, reg`. A function whose entry is anything else is not probed.

/// General purpose registers in instruction-encoding order (rax, rcx, rdx, rbx, rsp, rbp,
/// rsi, rdi, r8..r15).
pub type Reg = u8;

/// What the entry instruction does, and its length.
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
    /// `mov reg, [rip + disp]` (64-bit load).
    LoadRipRel { reg: Reg, disp: i32, len: u8 },
    /// `lea reg, [rip + disp]`.
    LeaRipRel { reg: Reg, disp: i32, len: u8 },
    /// `jmp rel`.
    Jump { disp: i32, len: u8 },
    /// `jmp [rip + disp]` (a jump through a pointer, as in PLT-like stubs).
    JumpRipRel { disp: i32, len: u8 },
}

impl Instr {
    pub fn len(self) -> u8 {
        match self {
            Self::Skip { len }
            | Self::Push { len, .. }
            | Self::SubRsp { len, .. }
            | Self::MovReg { len, .. }
            | Self::SetReg { len, .. }
            | Self::LoadRipRel { len, .. }
            | Self::LeaRipRel { len, .. }
            | Self::Jump { len, .. }
            | Self::JumpRipRel { len, .. } => len,
        }
    }
}

fn i32_at(code: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(code.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes the instruction at the start of `code`, if it is one the tracer can emulate.
pub fn decode(code: &[u8]) -> Option<Instr> {
    let (rex, op_at) = match code.first()? {
        b @ 0x40..=0x4f => (*b, 1),
        _ => (0, 0),
    };
    let (w, r, b) = (rex & 8 != 0, (rex >> 2) & 1, rex & 1);
    let op = *code.get(op_at)?;
    let modrm = code.get(op_at + 1).copied();
    let after_op = op_at as u8 + 1;
    // (mod, reg, rm) of the ModRM byte, with the REX extensions.
    let fields = modrm.map(|m| (m >> 6, ((m >> 3) & 7) | (r << 3), (m & 7) | (b << 3)));
    let rip_rel = |m: u8| m >> 6 == 0 && m & 7 == 5;
    match (rex, op) {
        (0, 0xf3) if code.get(1..4) == Some(&[0x0f, 0x1e, 0xfa]) => Some(Instr::Skip { len: 4 }),
        (0, 0x90) => Some(Instr::Skip { len: 1 }),
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
        (_, 0x89 | 0x8b) if fields?.0 == 3 => {
            let (_, reg, rm) = fields?;
            let (dst, src) = if op == 0x89 { (rm, reg) } else { (reg, rm) };
            Some(Instr::MovReg {
                dst,
                src,
                wide: w,
                len: after_op + 1,
            })
        }
        (_, 0x31 | 0x33) if !w && fields?.0 == 3 && fields?.1 == fields?.2 => Some(Instr::SetReg {
            reg: fields?.1,
            imm: 0,
            len: after_op + 1,
        }),
        (_, 0xb8..=0xbf) if !w => Some(Instr::SetReg {
            reg: (op - 0xb8) | (b << 3),
            imm: i32_at(code, after_op as usize)? as u32,
            len: after_op + 4,
        }),
        (_, 0x8b) if w && rip_rel(modrm?) => Some(Instr::LoadRipRel {
            reg: fields?.1,
            disp: i32_at(code, op_at + 2)?,
            len: after_op + 5,
        }),
        (_, 0x8d) if w && rip_rel(modrm?) => Some(Instr::LeaRipRel {
            reg: fields?.1,
            disp: i32_at(code, op_at + 2)?,
            len: after_op + 5,
        }),
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

/// Memory the emulation touches: a 64-bit load and a 64-bit store in the tracee.
pub trait Memory {
    fn load(&mut self, addr: u64) -> Option<u64>;
    fn store(&mut self, addr: u64, value: u64) -> Option<()>;
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
        Instr::LoadRipRel { reg, disp, .. } => *reg_mut(regs, reg) = mem.load(rel(disp))?,
        Instr::LeaRipRel { reg, disp, .. } => *reg_mut(regs, reg) = rel(disp),
        Instr::Jump { disp, .. } => regs.rip = rel(disp),
        Instr::JumpRipRel { disp, .. } => regs.rip = mem.load(rel(disp))?,
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
                LoadRipRel {
                    reg: 2,
                    disp: 0x14e1c1,
                    len: 7,
                },
            ),
            (
                &[0x4c, 0x8d, 0x05, 0x10, 0, 0, 0],
                LeaRipRel {
                    reg: 8,
                    disp: 0x10,
                    len: 7,
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
            &[0x48, 0x85, 0xff][..],         // test rdi, rdi: flags are live
            &[0xe8, 0, 0, 0, 0],             // call
            &[0x48, 0x8b, 0x47, 0x08],       // load through a register
            &[0x64, 0x48, 0x8b, 0x04, 0x25], // fs-relative load
            &[0x48],                         // cut short
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
    }
}
