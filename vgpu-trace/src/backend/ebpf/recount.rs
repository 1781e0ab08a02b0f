//! The verifier's instruction count on kernels before 5.16 (Ubuntu 22.04's 5.15, RHEL 9's 5.14,
//! Debian 11's 5.10), which tell it only in the verifier's log: each program is loaded once
//! more, as aya loaded it (the same object, relocated against the same maps), with the log at
//! the STATS level, and the count read from its `processed N insns` line. For `doctor`, not
//! for sessions: it costs a second verification.
use std::collections::HashSet;
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{Context as _, anyhow, bail};
use aya::{Ebpf, maps::Map};
use aya_obj::generated::{bpf_attach_type, bpf_insn, bpf_prog_type};

pub struct Recounter {
    obj: aya_obj::Object,
}

/// The kind of program to load again.
#[derive(Clone, Copy)]
pub enum Kind {
    RawTracepoint,
    /// A uprobe; with uprobe_multi's attach type or none.
    Uprobe {
        multi: bool,
    },
}

/// The descriptor of an aya map, for the kinds of maps the programs use.
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::ProgramArray(d)
        | Map::RingBuf(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

impl Recounter {
    /// The object relocated against `ebpf`'s maps (those it has not handed out yet: the
    /// programs are loaded again before the session takes its ring buffers).
    pub fn new(object: &[u8], ebpf: &Ebpf) -> anyhow::Result<Self> {
        let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
        let defs = obj.maps.clone();
        let fds: Vec<(&str, RawFd)> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name, map_fd(map)?)))
            .collect();
        // A map the relocation cannot find would leave a program pointing at another one.
        if let Some(missing) = defs.keys().find(|n| !fds.iter().any(|(f, _)| f == n)) {
            bail!("map {missing} is no longer the loader's (taken before the recount)");
        }
        let maps = fds
            .iter()
            .filter_map(|&(name, fd)| Some((name, fd, defs.get(name)?)));
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(maps, &text)
            .map_err(|e| anyhow!("relocating maps: {e}"))?;
        obj.relocate_calls(&text)
            .map_err(|e| anyhow!("relocating calls: {e}"))?;
        // Kernels from 5.5 have bpf_probe_read_kernel; older ones are not loaded at all.
        obj.sanitize_functions(|| true);
        Ok(Self { obj })
    }

    /// Instructions the verifier processed for `program`.
    pub fn count(&self, program: &str, kind: Kind) -> anyhow::Result<u32> {
        let prog = self
            .obj
            .programs
            .get(program)
            .with_context(|| format!("no program {program} in the object"))?;
        let function = self
            .obj
            .functions
            .get(&prog.function_key())
            .with_context(|| format!("no code for {program}"))?;
        let log = load_with_stats(&function.instructions, kind)?;
        super::load::processed(&log)
            .with_context(|| format!("no count in the verifier's log of {program}: {log}"))
    }
}

/// BPF_PROG_LOAD of `insns` with a STATS log; the program is closed at once. The log.
fn load_with_stats(insns: &[bpf_insn], kind: Kind) -> anyhow::Result<String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const LOG_STATS: u32 = 4;
    let (prog_type, attach) = match kind {
        Kind::RawTracepoint => (bpf_prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT, 0),
        Kind::Uprobe { multi } => (
            bpf_prog_type::BPF_PROG_TYPE_KPROBE,
            if multi {
                bpf_attach_type::BPF_TRACE_UPROBE_MULTI as u32
            } else {
                0
            },
        ),
    };
    let license = c"GPL";
    let mut log = vec![0u8; 64 << 10];
    // union bpf_attr, BPF_PROG_LOAD's part: prog_type, insn_cnt, insns, license, log_level,
    // log_size, log_buf, kern_version, prog_flags, prog_name[16], prog_ifindex,
    // expected_attach_type.
    let mut attr = [0u8; 128];
    let mut put = |at: usize, bytes: &[u8]| attr[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(prog_type as u32).to_ne_bytes());
    put(4, &(insns.len() as u32).to_ne_bytes());
    put(8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(16, &(license.as_ptr() as u64).to_ne_bytes());
    put(24, &LOG_STATS.to_ne_bytes());
    put(28, &(log.len() as u32).to_ne_bytes());
    put(32, &(log.as_mut_ptr() as u64).to_ne_bytes());
    put(68, &attach.to_ne_bytes());
    // SAFETY: a BPF_PROG_LOAD attr whose pointers (code, license, log) outlive the call.
    let fd = unsafe { super::load::sys_bpf(BPF_PROG_LOAD, &mut attr) };
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).into_owned();
    if fd < 0 {
        bail!("loading again: {}: {text}", std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor the kernel just gave us.
    unsafe { libc::close(fd as i32) };
    Ok(text)
}
