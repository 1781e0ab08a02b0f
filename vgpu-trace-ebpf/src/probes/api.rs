//! uprobes on CUDA driver and NVML discovery functions, in whatever file a followed process
//! maps (shims and NVIDIA's libraries alike): the return code, and the values `api::SPECS`
//! says the call wrote (device count, driver version, memory) or the string it was given.
//! uprobe_multi links: one per program and file, whatever the number of functions.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use vgpu_trace_common::{
    EventKind,
    api::{ApiReturnPayload, Out, SAVED_ARGS, spec},
};

use crate::{
    emit::{Record, Space},
    maps::is_followed,
};

/// Arguments saved at entry, keyed by (pid_tgid, entry stack pointer + chain slot) as in
/// `dl.rs`. A probed function that tail-calls another (a shim jumping into NVIDIA's library)
/// enters it at the same stack pointer: the second call takes the next slot, and both return
/// at once, innermost first, so a return takes the highest slot taken.
#[map]
static API_ARGS: LruHashMap<[u64; 2], [u64; SAVED_ARGS]> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn cookie<C: EbpfContext>(ctx: &C) -> u32 {
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) as u32 }
}

#[uprobe(multi)]
pub fn api_enter(ctx: ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_followed((pid_tgid >> 32) as u32) {
        return;
    }
    let arg = |n| ctx.arg::<u64>(n).unwrap_or(0);
    let args = [arg(0), arg(1), arg(2), arg(3), arg(4)];
    let sp = unsafe { (*ctx.regs).rsp };
    let mut slot = 0;
    while slot + 1 < CHAIN && unsafe { API_ARGS.get(&[pid_tgid, sp + slot]) }.is_some() {
        slot += 1;
    }
    let _ = API_ARGS.insert(&[pid_tgid, sp + slot], &args, 0);
}

/// How many calls one chain of tail calls keeps apart (the stack pointer at entry is 8 bytes
/// off 16-byte alignment, so the slots never meet another call's key).
const CHAIN: u64 = 4;

#[inline(always)]
fn read_out(out: Out, args: &[u64; SAVED_ARGS]) -> u64 {
    let at = |n: u8| args.get(n as usize).copied().unwrap_or(0);
    match out {
        Out::None => 0,
        Out::Arg(n) => at(n),
        Out::I32At(n, off) if at(n) != 0 => {
            unsafe { bpf_probe_read_user((at(n) + off as u64) as *const i32) }
                .map_or(0, |v| v as u32 as u64)
        }
        Out::U64At(n, off) if at(n) != 0 => {
            unsafe { bpf_probe_read_user((at(n) + off as u64) as *const u64) }.unwrap_or(0)
        }
        _ => 0,
    }
}

#[uretprobe(multi)]
pub fn api_return(ctx: RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_followed((pid_tgid >> 32) as u32) {
        return;
    }
    let sp = unsafe { (*ctx.regs).rsp };
    let mut slot = CHAIN;
    let (key, args) = loop {
        if slot == 0 {
            return;
        }
        slot -= 1;
        let key = [pid_tgid, sp - 8 + slot];
        if let Some(&args) = unsafe { API_ARGS.get(&key) } {
            break (key, args);
        }
    };
    let _ = API_ARGS.remove(&key);
    let id = cookie(&ctx);
    let Some(spec) = spec(id) else { return };
    let Some(mut rec) = Record::<ApiReturnPayload>::new() else {
        return;
    };
    *rec.payload() = ApiReturnPayload {
        id,
        ret: ctx.ret::<i64>() as i32,
        outs: [read_out(spec.outs[0], &args), read_out(spec.outs[1], &args)],
    };
    if let Some(n) = spec.text {
        let ptr = args.get(n as usize).copied().unwrap_or(0);
        rec.push_str(Space::User, ptr as *const u8, false);
    }
    rec.send(EventKind::ApiReturn);
}
