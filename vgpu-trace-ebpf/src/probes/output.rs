//! What followed processes write to stdout and stderr: Ollama's own log, which says what it
//! concluded from the libraries. Each write's first `OUTPUT_MAX` bytes, within a budget per
//! process, so that a program flooding its output cannot crowd out the library events.
use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::map, maps::LruHashMap};
use vgpu_trace_common::{EventKind, OUTPUT_BUDGET_PER_S, OUTPUT_MAX, OutputPayload, error_index};

use crate::emit::Record;
use crate::maps::{CAPTURE_OUTPUT, count_error};

/// Per process: the start of its current one-second window, and the bytes kept in it.
#[map]
static OUTPUT_BUDGET: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(4096, 0);

const SECOND_NS: u64 = 1_000_000_000;

pub fn write_enter(pid_tgid: u64, fd: u64, buf: u64, count: u64) {
    if (fd != 1 && fd != 2) || count == 0 || CAPTURE_OUTPUT.load() == 0 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let keep = if count > OUTPUT_MAX as u64 {
        OUTPUT_MAX as u64
    } else {
        count
    };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let budget = match unsafe { OUTPUT_BUDGET.get(&tgid) } {
        Some(&[start, used]) if now.wrapping_sub(start) < SECOND_NS => [start, used + keep],
        _ => [now, keep],
    };
    if budget[1] > OUTPUT_BUDGET_PER_S {
        count_error(error_index::OUTPUT_OVER_BUDGET);
        return;
    }
    let _ = OUTPUT_BUDGET.insert(&tgid, &budget, 0);
    let Some(mut rec) = Record::<OutputPayload>::new() else {
        return;
    };
    *rec.payload() = OutputPayload {
        fd: fd as u32,
        _pad: 0,
        count,
    };
    rec.copy_user(buf, keep);
    rec.send(EventKind::Output);
}
