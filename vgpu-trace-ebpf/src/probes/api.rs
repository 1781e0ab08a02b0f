//! uprobes on CUDA driver and NVML discovery functions, in whatever file a followed process
//! maps (shims and NVIDIA's libraries alike): the return code, and the values `api::SPECS`
//! says the call wrote (device count, driver version, memory) or the string it was given.
//! uprobe_multi links (one per program and file, whatever the number of functions) or
//! perf-event uprobes, as for `dl.rs`: the entry needs no function's name, the return takes it
//! from the attach cookie, or, without cookies, is one program per function.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use vgpu_trace_common::{
    EventKind,
    api::{ApiReturnPayload, Out, SAVED_ARGS, SPECS},
};

use super::cookie;
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

#[uprobe(multi)]
pub fn api_enter(ctx: ProbeContext) {
    enter(&ctx);
}

#[uprobe]
pub fn api_enter_one(ctx: ProbeContext) {
    enter(&ctx);
}

#[inline(always)]
fn enter(ctx: &ProbeContext) {
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

/// Saved argument `n`, picked by a match: an index into the copy on the stack would be a
/// variable-offset stack read, which the verifier refuses.
#[inline(always)]
fn arg_at(args: &[u64; SAVED_ARGS], n: u8) -> u64 {
    match n {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        _ => 0,
    }
}

#[inline(always)]
fn read_out(out: Out, args: &[u64; SAVED_ARGS]) -> u64 {
    let at = |n: u8| arg_at(args, n);
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
    exit(&ctx, cookie(&ctx));
}

#[uretprobe]
pub fn api_return_one(ctx: RetProbeContext) {
    exit(&ctx, cookie(&ctx));
}

/// A return program per function (its `api::SPECS` id), for kernels without attach cookies;
/// the names are those of `vgpu_trace_common::programs::api_return`.
macro_rules! per_function {
    ($($exit:ident => $id:literal;)*) => {
        $(
            #[uretprobe]
            pub fn $exit(ctx: RetProbeContext) {
                exit(&ctx, $id);
            }
        )*
        const _: () = assert!([$($id),*].len() == SPECS.len());
    };
}

per_function! {
    api_return_1 => 1; api_return_2 => 2; api_return_3 => 3; api_return_4 => 4;
    api_return_5 => 5; api_return_6 => 6; api_return_7 => 7; api_return_8 => 8;
    api_return_9 => 9; api_return_10 => 10; api_return_11 => 11; api_return_12 => 12;
    api_return_13 => 13; api_return_14 => 14; api_return_15 => 15; api_return_16 => 16;
    api_return_17 => 17; api_return_18 => 18; api_return_19 => 19; api_return_20 => 20;
    api_return_21 => 21;
}

#[inline(always)]
fn exit(ctx: &RetProbeContext, id: u32) {
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
    // The index read back through memory: LLVM would bound `id - 1` and index with `id`,
    // which the verifier cannot follow ("unbounded memory access").
    let index = (id as usize).wrapping_sub(1);
    let index = unsafe { core::ptr::read_volatile(&index) };
    let Some(spec) = SPECS.get(index) else { return };
    let Some(mut rec) = Record::<ApiReturnPayload>::new() else {
        return;
    };
    *rec.payload() = ApiReturnPayload {
        id,
        ret: ctx.ret::<i64>() as i32,
        outs: [read_out(spec.outs[0], &args), read_out(spec.outs[1], &args)],
    };
    if let Some(n) = spec.text {
        let ptr = arg_at(&args, n);
        rec.push_str(Space::User, ptr as *const u8, false);
    }
    rec.send(EventKind::ApiReturn);
}
