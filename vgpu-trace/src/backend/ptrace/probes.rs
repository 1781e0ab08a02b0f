//! Breakpoints on the `dl*` family and the CUDA/NVML discovery functions, for the ptrace
//! backend: what the eBPF backend's uprobes and uretprobes see, from the same symbols.
//!
//! - A file is armed when a traced process maps it executable, stopped at the end of that
//!   `mmap`: before any of its code can run.
//! - Entry: an `int3` on the function's first byte, for good. A hit reads the arguments, then
//!   emulates the instruction the `int3` stands on (see `x86`), so threads never race over a
//!   byte put back.
//! - Return: the return address on the stack is swapped for [`RETURN_TRAP`], an address in the
//!   never-mapped first page, as a uretprobe swaps it for its trampoline; the `ret` faults there
//!   and the tracer sends the thread on to the real caller. ld.so sees the same (unknown) caller
//!   under both backends.
use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use nix::sys::ptrace;
use nix::unistd::Pid;
use vgpu_trace_common::{DlFunc, STR_MAX, api};

use super::tracee;
use super::x86::{self, Instr, Memory};
use crate::event::RawBody;
use crate::files::{self, FileId};
use crate::text::Text;

/// Where probed functions return to: in the first page, which is never mapped.
pub const RETURN_TRAP: u64 = 0x10;
const INT3: u8 = 0xcc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Dl(DlFunc),
    /// `dlerror`: only its return, whose text explains the thread's last failure.
    DlError,
    /// `api::SPECS[id - 1]`.
    Api(u32),
    /// ld.so's `_dl_debug_state` (`r_debug.r_brk`), called around each change of the list of
    /// objects it has mapped: only its entry, which sends the engine to read the list.
    Rendezvous,
    /// The C library's `write`, where no system call stops show writes (`attach`): only its
    /// entry, for what C and C++ code (a ggml backend, a shim) prints. A Go runtime writes
    /// with system calls of its own, never through here.
    Write,
}

/// The probes of one library file, by file offset, with each entry instruction decoded.
#[derive(Default)]
pub struct FileProbes {
    points: Vec<(u64, Probe, Instr)>,
    /// Functions whose first instruction cannot be emulated, so not probed.
    pub refused: Vec<String>,
}

impl FileProbes {
    /// The probes of the file at `at` (a /proc link to it: an fd, a mapping's `map_files`
    /// entry; or its path seen from /proc/PID/root); none if it cannot be read as ELF.
    fn open(at: &Path, writes: bool) -> Self {
        let target = std::fs::read_link(at).unwrap_or_else(|_| at.to_path_buf());
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::loader::fs::open_regular(at, true)
            .map_err(anyhow::Error::from)
            .and_then(|file| Self::read(&file, &name, writes))
            .unwrap_or_else(|e| {
                tracing::debug!("ptrace: not probing {name}: {e:#}");
                Self::default()
            })
    }

    fn read(file: &std::fs::File, name: &str, writes: bool) -> anyhow::Result<Self> {
        let elf = files::read_elf_file(file.try_clone()?, true)?;
        let mut wanted: Vec<(&str, Probe)> = Vec::new();
        let libc = crate::backend::ebpf::provides_dl(name);
        if libc {
            wanted.extend(DlFunc::CALLS.map(|f| (f.symbol(), Probe::Dl(f))));
            wanted.push(("dlerror", Probe::DlError));
            if writes {
                wanted.push(("write", Probe::Write));
            }
        }
        // glibc's ld.so, or musl's, which is its C library.
        if libc || is_loader(name) {
            wanted.push(("_dl_debug_state", Probe::Rendezvous));
        }
        for (index, spec) in api::SPECS.iter().enumerate() {
            wanted.push((spec.name, Probe::Api(index as u32 + 1)));
        }
        let mut probes = Self::default();
        for (symbol, probe) in wanted {
            for offset in elf.facts.offsets_of(symbol) {
                let mut code = [0u8; 16];
                let n = file.read_at(&mut code, offset).unwrap_or(0);
                match x86::decode(&code[..n]) {
                    Some(instr) => probes.points.push((offset, probe, instr)),
                    None => probes
                        .refused
                        .push(format!("{symbol} (starts {:02x?})", &code[..n.min(4)])),
                }
            }
        }
        Ok(probes)
    }
}

#[derive(Clone)]
struct Breakpoint {
    probe: Probe,
    instr: Instr,
    /// The byte the `int3` replaced, put back when the tracer lets go.
    original: u8,
}

/// The breakpoints of one address space.
#[derive(Clone, Default)]
struct Space {
    points: HashMap<u64, Breakpoint>,
    /// Their bytes are back (the tracer is letting go): a thread that still meets one (it
    /// trapped just before) is sent back to run the original instruction.
    restored: bool,
    /// Breakpoints taken out while tracing goes on ([`Probes::disarm`]), treated the same.
    retired: std::collections::HashSet<u64>,
}

impl Space {
    /// An `int3` at `at`, through the stopped thread `tid`; false if the byte could not be
    /// written.
    fn plant(&mut self, tid: Pid, at: u64, probe: Probe, instr: Instr) -> bool {
        let Some(original) = tracee::swap_byte(tid, at, INT3) else {
            return false;
        };
        self.points.insert(
            at,
            Breakpoint {
                probe,
                instr,
                original,
            },
        );
        true
    }
}

/// A probed call under way on one thread.
#[derive(Clone)]
struct Frame {
    /// The stack pointer at entry, where the return address was swapped.
    entry_sp: u64,
    ret: u64,
    probe: Probe,
    args: [u64; api::SAVED_ARGS],
}

/// What a stop at a breakpoint or at the return trap turned out to be.
pub enum Hit {
    /// Ours: the thread was moved on; these are its events.
    Handled(Vec<RawBody>),
    /// Ours, at ld.so's rendezvous: the thread was moved on, and the list of loaded objects
    /// is to be read.
    Rendezvous,
    /// Ours, at the entry of `write(fd, buf, count)`: the thread was moved on.
    Write { fd: u64, buf: u64, count: u64 },
    /// Not ours: the signal belongs to the program.
    NotOurs,
}

#[derive(Default)]
pub struct Probes {
    files: HashMap<FileId, Arc<FileProbes>>,
    /// Breakpoints per process (address space).
    spaces: HashMap<u32, Space>,
    frames: HashMap<Pid, Vec<Frame>>,
    /// For the user, taken by the engine.
    pub warnings: Vec<String>,
    /// Probe the C library's `write` too (no system call stops show writes).
    writes: bool,
}

/// The stopped thread's memory, for the emulation.
struct Stopped(Pid);

impl Memory for Stopped {
    fn load(&mut self, addr: u64) -> Option<u64> {
        tracee::peek(self.0, addr)
    }
    fn load_small(&mut self, addr: u64, size: u8) -> Option<u64> {
        let mut bytes = [0u8; 8];
        let got = tracee::read_bytes(self.0, addr, usize::from(size.min(8)));
        (got.len() == size as usize).then_some(())?;
        bytes[..got.len()].copy_from_slice(&got);
        Some(u64::from_le_bytes(bytes))
    }
    fn store(&mut self, addr: u64, value: u64) -> Option<()> {
        tracee::poke(self.0, addr, value)
    }
}

impl Probes {
    /// Probes that take the C library's `write` too, or not.
    pub fn with_writes(writes: bool) -> Self {
        Self {
            writes,
            ..Self::default()
        }
    }

    /// `len` bytes of the file `id` (reachable at `file`), from file offset `pgoff`, are
    /// mapped executable at `addr` in `tgid`, whose thread `tid` is stopped: plants the
    /// breakpoints that fall in it. Returns the functions of a newly read file that could not
    /// be probed.
    pub fn arm(
        &mut self,
        (tgid, tid): (u32, Pid),
        (file, id): (&Path, FileId),
        (addr, len, pgoff): (u64, u64, u64),
    ) -> Vec<String> {
        let mut refused = Vec::new();
        let probes = match self.files.get(&id) {
            Some(p) => p.clone(),
            None => {
                let probes = Arc::new(FileProbes::open(file, self.writes));
                refused = probes.refused.clone();
                self.files.insert(id, probes.clone());
                probes
            }
        };
        let space = self.spaces.entry(tgid).or_default();
        for &(offset, probe, instr) in &probes.points {
            if offset < pgoff || offset >= pgoff + len {
                continue;
            }
            let at = addr + (offset - pgoff);
            // Known and still there; a file unmapped and mapped again at the same address
            // (dlclose, then dlopen) comes back without it.
            if space.points.contains_key(&at)
                && tracee::peek(tid, at).is_some_and(|w| w as u8 == INT3)
            {
                continue;
            }
            space.plant(tid, at, probe, instr);
        }
        refused
    }

    /// Plants the rendezvous breakpoint at `at` in `tgid` (from `r_debug.r_brk`, where ld.so's
    /// symbol was not found), unless one is there. False if its instruction cannot be
    /// emulated or the byte not written.
    pub fn arm_rendezvous(&mut self, (tgid, tid): (u32, Pid), at: u64) -> bool {
        let space = self.spaces.entry(tgid).or_default();
        if space
            .points
            .values()
            .any(|bp| bp.probe == Probe::Rendezvous)
        {
            return true;
        }
        let code = tracee::read_bytes(tid, at, 16);
        x86::decode(&code).is_some_and(|instr| space.plant(tid, at, Probe::Rendezvous, instr))
    }

    /// Takes `probe`'s breakpoints out of `tgid`, through its stopped thread `tid`, for the
    /// rest of the trace (or until it execs).
    pub fn disarm(&mut self, (tgid, tid): (u32, Pid), probe: Probe) {
        let Some(space) = self.spaces.get_mut(&tgid) else {
            return;
        };
        let points: Vec<(u64, u8)> = space
            .points
            .iter()
            .filter(|(_, bp)| bp.probe == probe)
            .map(|(&at, bp)| (at, bp.original))
            .collect();
        for (at, original) in points {
            if tracee::swap_byte(tid, at, original).is_some() {
                space.points.remove(&at);
                space.retired.insert(at);
            }
        }
    }

    /// A SIGTRAP stop of `tid`: the entry of a probed function, or the program's own.
    pub fn on_trap(&mut self, tgid: u32, tid: Pid) -> Hit {
        let Ok(mut regs) = ptrace::getregs(tid) else {
            return Hit::NotOurs;
        };
        let at = regs.rip.wrapping_sub(1);
        let Some(space) = self.spaces.get(&tgid) else {
            return Hit::NotOurs;
        };
        let Some(bp) = space.points.get(&at) else {
            if space.retired.contains(&at) {
                // Trapped before the byte came back: run the original instruction instead.
                regs.rip = at;
                if ptrace::setregs(tid, regs).is_ok() {
                    return Hit::Handled(Vec::new());
                }
            }
            return Hit::NotOurs;
        };
        if space.restored {
            // Trapped before the byte came back: run the original instruction instead.
            regs.rip = at;
            return match ptrace::setregs(tid, regs) {
                Ok(()) => Hit::Handled(Vec::new()),
                Err(_) => Hit::NotOurs,
            };
        }
        let (probe, instr) = (bp.probe, bp.instr);
        if matches!(probe, Probe::Rendezvous | Probe::Write) {
            // No frame: only the entry matters.
            let (fd, buf, count) = (regs.rdi, regs.rsi, regs.rdx);
            let mut mem = Stopped(tid);
            if x86::emulate(instr, at, &mut regs, &mut mem).is_none()
                || ptrace::setregs(tid, regs).is_err()
            {
                return Hit::NotOurs;
            }
            return match probe {
                Probe::Write => Hit::Write { fd, buf, count },
                _ => Hit::Rendezvous,
            };
        }
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8];
        let sp = regs.rsp;
        let frames = self.frames.entry(tid).or_default();
        let mut mem = Stopped(tid);
        let ret = mem.load(sp);
        // A probed function that tail-calls another (a shim jumping into NVIDIA's library)
        // enters it with its own return already swapped: both return at once, to the first's
        // caller. Any other frame at or below this stack pointer was left without returning
        // (longjmp).
        let tail_call = ret == Some(RETURN_TRAP);
        frames.retain(|f| f.entry_sp > sp || (tail_call && f.entry_sp == sp));
        let real_ret = if tail_call {
            frames.last().filter(|f| f.entry_sp == sp).map(|f| f.ret)
        } else {
            ret.filter(|_| mem.store(sp, RETURN_TRAP).is_some())
        };
        // Without a readable stack the call goes on unseen at return; it still goes on.
        if let Some(ret) = real_ret {
            frames.push(Frame {
                entry_sp: sp,
                ret,
                probe,
                args,
            });
        }
        if x86::emulate(instr, at, &mut regs, &mut mem).is_none()
            || ptrace::setregs(tid, regs).is_err()
        {
            // The instruction's memory operand is not readable or writable: the thread meets
            // the trap as it would have met the fault without us.
            self.warnings.push(format!(
                "could not carry thread {tid} over the breakpoint at {at:#x}"
            ));
            return Hit::NotOurs;
        }
        Hit::Handled(entry_event(tid, probe, &args).into_iter().collect())
    }

    /// A SIGSEGV stop of `tid`: a probed function returning into the trap, or the program's own.
    pub fn on_fault(&mut self, tid: Pid) -> Hit {
        let Ok(mut regs) = ptrace::getregs(tid) else {
            return Hit::NotOurs;
        };
        if regs.rip != RETURN_TRAP {
            return Hit::NotOurs;
        }
        let Some(frames) = self.frames.get_mut(&tid) else {
            return Hit::NotOurs;
        };
        // The `ret` popped the swapped address: the stack is 8 bytes above the entry's.
        let sp = regs.rsp.wrapping_sub(8);
        frames.retain(|f| f.entry_sp >= sp);
        // Innermost first: a tail call's frames all return here.
        let mut returned = Vec::new();
        while let Some(frame) = frames.pop_if(|f| f.entry_sp == sp) {
            returned.push(frame);
        }
        let Some(last) = returned.last() else {
            return Hit::NotOurs;
        };
        regs.rip = last.ret;
        if ptrace::setregs(tid, regs).is_err() {
            return Hit::NotOurs;
        }
        Hit::Handled(
            returned
                .iter()
                .filter_map(|frame| return_event(tid, frame, regs.rax))
                .collect(),
        )
    }

    /// A fork copied the parent's breakpoints, and the forking thread's calls under way.
    pub fn forked(&mut self, parent_tgid: u32, parent_tid: Pid, child: Pid) {
        if let Some(mut space) = self.spaces.get(&parent_tgid).cloned() {
            // Copied before or after the parent's bytes came back: put back again to be sure.
            space.restored = false;
            self.spaces.insert(child.as_raw() as u32, space);
        }
        if let Some(frames) = self.frames.get(&parent_tid).cloned() {
            self.frames.insert(child, frames);
        }
    }

    /// A new program: nothing of the old one is left.
    pub fn exec(&mut self, tgid: u32) {
        self.spaces.remove(&tgid);
    }

    pub fn thread_gone(&mut self, tid: Pid) {
        self.frames.remove(&tid);
    }

    pub fn process_gone(&mut self, tgid: u32) {
        self.spaces.remove(&tgid);
    }

    /// Letting go: puts every patched byte back through /proc/PID/mem, which needs no thread
    /// stopped. A space it cannot write is put back by [`Probes::release_thread`] instead.
    pub fn restore_all(&mut self) {
        for (&tgid, space) in &mut self.spaces {
            if !space.restored {
                space.restored = tracee::write_bytes(
                    tgid,
                    space.points.iter().map(|(&at, bp)| (at, bp.original)),
                );
            }
        }
    }

    /// Letting go of `tid`, stopped: its space's bytes are back, and the return addresses of
    /// its calls under way are the real ones again (a return already popped was seen to at
    /// its fault stop). Only then may it run untraced.
    pub fn release_thread(&mut self, tgid: u32, tid: Pid) {
        if let Some(space) = self.spaces.get_mut(&tgid)
            && !space.restored
        {
            space.restored = space
                .points
                .iter()
                .all(|(&at, bp)| tracee::swap_byte(tid, at, bp.original).is_some());
        }
        // Frames below the stack pointer were left by a longjmp; their slots are free stack,
        // maybe a leaf function's red zone, and stay untouched.
        let sp = ptrace::getregs(tid).map_or(u64::MAX, |r| r.rsp);
        for frame in self.frames.remove(&tid).unwrap_or_default() {
            if frame.entry_sp >= sp && tracee::peek(tid, frame.entry_sp) == Some(RETURN_TRAP) {
                tracee::poke(tid, frame.entry_sp, frame.ret);
            }
        }
    }
}

/// ld.so, by its file name: glibc's `ld-linux-x86-64.so.2`, musl's `ld-musl-x86_64.so.1`.
fn is_loader(file_name: &str) -> bool {
    file_name.starts_with("ld-") && file_name.contains(".so")
}

fn entry_event(tid: Pid, probe: Probe, args: &[u64; api::SAVED_ARGS]) -> Option<RawBody> {
    let Probe::Dl(func) = probe else {
        return None;
    };
    let text = |ptr: u64| (ptr != 0).then(|| tracee::read_string(tid, ptr, STR_MAX));
    // (name pointer, mode, handle or namespace) by signature, as the eBPF probe reads them.
    let (name, mode, arg) = match func {
        DlFunc::Dlopen => (args[0], args[1], 0),
        DlFunc::Dlmopen => (args[1], args[2], args[0]),
        DlFunc::Dlsym | DlFunc::Dlvsym => (args[1], 0, args[0]),
        DlFunc::Dlclose => (0, 0, args[0]),
    };
    Some(RawBody::DlEnter {
        func,
        mode: mode as u32,
        arg,
        name: if func == DlFunc::Dlclose {
            None
        } else {
            text(name)
        },
        version: if func == DlFunc::Dlvsym {
            text(args[2])
        } else {
            None
        },
    })
}

fn return_event(tid: Pid, frame: &Frame, ret: u64) -> Option<RawBody> {
    let text = |ptr: u64| (ptr != 0).then(|| tracee::read_string(tid, ptr, STR_MAX));
    match frame.probe {
        Probe::Dl(func) => {
            // A dlopen handle is the object's `struct link_map`, whose second word is
            // `l_name`: the path ld.so loaded (public ABI, <link.h>).
            let loaded_path = matches!(func, DlFunc::Dlopen | DlFunc::Dlmopen)
                .then(|| tracee::peek(tid, ret.wrapping_add(8)))
                .flatten()
                .and_then(text)
                .filter(|t: &Text| !t.as_bytes().is_empty());
            Some(RawBody::DlReturn {
                func,
                ret,
                late_name: None,
                loaded_path,
            })
        }
        Probe::DlError => text(ret).map(|text| RawBody::DlError { text }),
        Probe::Rendezvous | Probe::Write => None,
        Probe::Api(id) => {
            let spec = api::spec(id)?;
            let outs = spec.outs.map(|out| read_out(tid, out, &frame.args));
            Some(RawBody::ApiReturn {
                id,
                ret: ret as i32,
                outs,
                text: spec.text.and_then(|n| text(frame.args[n as usize])),
            })
        }
    }
}

/// A value the call wrote (or an argument), as the eBPF return probe reads it.
fn read_out(tid: Pid, out: api::Out, args: &[u64; api::SAVED_ARGS]) -> u64 {
    let at = |n: u8| args.get(n as usize).copied().unwrap_or(0);
    let read = |n: u8, off: u8| {
        if at(n) == 0 {
            return Vec::new();
        }
        tracee::read_bytes(tid, at(n) + u64::from(off), 8)
    };
    match out {
        api::Out::None => 0,
        api::Out::Arg(n) => at(n),
        api::Out::I32At(n, off) => read(n, off)
            .first_chunk::<4>()
            .map_or(0, |b| u32::from_le_bytes(*b) as u64),
        api::Out::U64At(n, off) => read(n, off)
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_le_bytes(*b)),
    }
}
