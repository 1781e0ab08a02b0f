//! uprobes on the libc `dl*` family. Which function fired (a `DlFunc`, or `DLERROR_COOKIE` for
//! `dlerror`'s return) comes one of three ways, by what the kernel can do
//! (userspace chooses: `backend/ebpf/kernel.rs`, `AttachMethod`):
//! - `dl_enter`/`dl_return`: one uprobe_multi link per program and libc file (6.6+), the
//!   function in the attach cookie, so a session's probes are registered, and released, in one
//!   step each;
//! - `dl_enter_one`/`dl_return_one`: the same, as a perf-event uprobe per function (5.15+);
//! - `dl_enter_dlopen`, `dl_return_dlopen`, ...: a program per function, which knows its own,
//!   where there is no attach cookie (5.10 to 5.14).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use vgpu_trace_common::{
    DLERROR_COOKIE, DlEnterPayload, DlFunc, DlReturnPayload, EventKind, dl_return_flags,
};

use super::cookie;
use crate::{
    emit::{Record, Space},
    maps::is_followed,
};

/// Name pointers that could not be read at entry, keyed by (pid_tgid, entry stack pointer) so
/// that nested calls on one thread stay apart. A uprobe cannot fault pages in, and a name that
/// is a string literal in a library mapped a moment ago (libcudart's "libcuda.so.1") is often
/// not resident yet; by the time the function returns it has read the name, so the return
/// probe reads it again. LRU: an entry whose return is never seen must not leak.
#[map]
static LATE_NAMES: LruHashMap<[u64; 2], [u64; 2]> = LruHashMap::with_max_entries(4096, 0);

/// The stack pointer at function entry, as the return probe can recompute it: on x86_64 the
/// return pops the return address, so the return probe sees it 8 bytes higher.
#[inline(always)]
fn entry_sp(regs_sp: u64, at_return: bool) -> u64 {
    if at_return { regs_sp - 8 } else { regs_sp }
}

#[inline(always)]
fn current_followed() -> bool {
    is_followed((bpf_get_current_pid_tgid() >> 32) as u32)
}

#[uprobe(multi)]
pub fn dl_enter(ctx: ProbeContext) {
    enter(&ctx, cookie(&ctx));
}

#[uprobe]
pub fn dl_enter_one(ctx: ProbeContext) {
    enter(&ctx, cookie(&ctx));
}

#[uretprobe(multi)]
pub fn dl_return(ctx: RetProbeContext) {
    exit(&ctx, cookie(&ctx));
}

#[uretprobe]
pub fn dl_return_one(ctx: RetProbeContext) {
    exit(&ctx, cookie(&ctx));
}

/// One entry and one return program per function, for kernels without attach cookies; the
/// names are those of `vgpu_trace_common::programs::{dl_enter, dl_return}`.
macro_rules! per_function {
    ($($enter:ident, $exit:ident => $func:expr;)*) => {$(
        #[uprobe]
        pub fn $enter(ctx: ProbeContext) {
            enter(&ctx, $func as u32);
        }

        #[uretprobe]
        pub fn $exit(ctx: RetProbeContext) {
            exit(&ctx, $func as u32);
        }
    )*};
}

per_function! {
    dl_enter_dlopen, dl_return_dlopen => DlFunc::Dlopen;
    dl_enter_dlmopen, dl_return_dlmopen => DlFunc::Dlmopen;
    dl_enter_dlsym, dl_return_dlsym => DlFunc::Dlsym;
    dl_enter_dlvsym, dl_return_dlvsym => DlFunc::Dlvsym;
    dl_enter_dlclose, dl_return_dlclose => DlFunc::Dlclose;
}

#[uretprobe]
pub fn dl_return_dlerror(ctx: RetProbeContext) {
    exit(&ctx, DLERROR_COOKIE);
}

#[inline(always)]
fn enter(ctx: &ProbeContext, func: u32) {
    if !current_followed() {
        return;
    }
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
    let version = if func == DlFunc::Dlvsym as u32 {
        arg(2)
    } else {
        0
    };
    if func != DlFunc::Dlclose as u32 {
        push_name(&mut rec, name, version);
    }
    if rec.read_failed() {
        let sp = unsafe { (*ctx.regs).rsp };
        let key = [bpf_get_current_pid_tgid(), entry_sp(sp, false)];
        let _ = LATE_NAMES.insert(&key, &[name, version], 0);
    }
    rec.send(EventKind::DlEnter);
}

/// The name, or for dlvsym "name NUL version" (`version` non-zero), as `DlEnter` carries it.
#[inline(always)]
fn push_name<P>(rec: &mut Record<P>, name: u64, version: u64) {
    if version != 0 {
        if rec.push_str(Space::User, name as *const u8, true) {
            rec.push_str(Space::User, version as *const u8, false);
        }
    } else {
        rec.push_str(Space::User, name as *const u8, false);
    }
}

#[inline(always)]
fn exit(ctx: &RetProbeContext, func: u32) {
    if !current_followed() {
        return;
    }
    if func == DLERROR_COOKIE {
        dlerror_return(ctx);
        return;
    }
    let Some(mut rec) = Record::<DlReturnPayload>::new() else {
        return;
    };
    let sp = unsafe { (*ctx.regs).rsp };
    let key = [bpf_get_current_pid_tgid(), entry_sp(sp, true)];
    let ret = ctx.ret::<u64>();
    let mut flags = 0;
    if let Some(&[name, version]) = unsafe { LATE_NAMES.get(&key) } {
        let _ = LATE_NAMES.remove(&key);
        // Flagged only when read: a path that follows must not be taken for the name.
        if rec.push_str(Space::User, name as *const u8, true)
            && (version == 0 || rec.push_str(Space::User, version as *const u8, true))
        {
            flags |= dl_return_flags::LATE_NAME;
        }
    }
    // A dlopen handle is the object's `struct link_map`, whose second word is `l_name`: the
    // path ld.so really loaded (public ABI, <link.h>).
    if (func == DlFunc::Dlopen as u32 || func == DlFunc::Dlmopen as u32) && ret != 0 {
        if let Ok(l_name) = unsafe { bpf_probe_read_user((ret + 8) as *const u64) } {
            if l_name != 0 && rec.push_str(Space::User, l_name as *const u8, true) {
                flags |= dl_return_flags::LOADED_PATH;
            }
        }
    }
    *rec.payload() = DlReturnPayload { func, flags, ret };
    rec.send(EventKind::DlReturn);
}

/// `dlerror()` returns the text of the thread's last failure; userspace ties it to that call.
#[inline(always)]
fn dlerror_return(ctx: &RetProbeContext) {
    let text = ctx.ret::<u64>();
    if text == 0 {
        return;
    }
    let Some(mut rec) = Record::<()>::new() else {
        return;
    };
    rec.push_str(Space::User, text as *const u8, false);
    rec.send(EventKind::DlError);
}
