//! uprobes on the libc `dl*` family. One entry and one return program serve every
//! function; the attach cookie says which function fired (a `DlFunc`).
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_attach_cookie},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use vgpu_trace_common::{DlEnterPayload, DlFunc, DlReturnPayload, EventKind};

use crate::{
    emit::{Record, Space},
    maps::is_followed,
};

#[inline(always)]
fn current_followed() -> bool {
    is_followed((bpf_get_current_pid_tgid() >> 32) as u32)
}

#[inline(always)]
fn cookie<C: EbpfContext>(ctx: &C) -> u32 {
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) as u32 }
}

#[uprobe]
pub fn dl_enter(ctx: ProbeContext) {
    if !current_followed() {
        return;
    }
    let func = cookie(&ctx);
    let arg = |n| ctx.arg::<u64>(n).unwrap_or(0);
    // (name pointer, mode, handle-or-namespace) by signature.
    let (name, mode, handle) = match DlFunc::from_u32(func) {
        Some(DlFunc::Dlopen) => (arg(0), arg(1), 0),
        Some(DlFunc::Dlmopen) => (arg(1), arg(2), arg(0)),
        Some(DlFunc::Dlsym | DlFunc::Dlvsym) => (arg(1), 0, arg(0)),
        Some(DlFunc::Dlclose) => (0, 0, arg(0)),
        None => return,
    };
    let Some(mut rec) = Record::<DlEnterPayload>::new() else {
        return;
    };
    *rec.payload() = DlEnterPayload {
        func,
        mode: mode as u32,
        arg: handle,
    };
    if func == DlFunc::Dlvsym as u32 {
        // name NUL version
        if rec.push_str(Space::User, name as *const u8, true) {
            rec.push_str(Space::User, arg(2) as *const u8, false);
        }
    } else if func != DlFunc::Dlclose as u32 {
        rec.push_str(Space::User, name as *const u8, false);
    }
    rec.send(EventKind::DlEnter);
}

#[uretprobe]
pub fn dl_return(ctx: RetProbeContext) {
    if !current_followed() {
        return;
    }
    let Some(mut rec) = Record::<DlReturnPayload>::new() else {
        return;
    };
    *rec.payload() = DlReturnPayload {
        func: cookie(&ctx),
        _pad: 0,
        ret: ctx.ret::<u64>(),
    };
    rec.send(EventKind::DlReturn);
}

/// `dlerror()` returns the text of the thread's last failure; userspace ties it to that call.
#[uretprobe]
pub fn dlerror_return(ctx: RetProbeContext) {
    let text = ctx.ret::<u64>();
    if text == 0 || !current_followed() {
        return;
    }
    let Some(mut rec) = Record::<()>::new() else {
        return;
    };
    rec.push_str(Space::User, text as *const u8, false);
    rec.send(EventKind::DlError);
}
