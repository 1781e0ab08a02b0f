//! One file per hook family.
mod api;
mod dl;
mod exec;
mod files;
mod output;
mod sched;
mod syscalls;

use aya_ebpf::{EbpfContext, helpers::generated::bpf_get_attach_cookie};

/// The attach cookie: which function a uprobe shared by several fired at (5.15+; a program
/// that calls it does not load on older kernels, so only the cookie programs do).
#[inline(always)]
fn cookie<C: EbpfContext>(ctx: &C) -> u32 {
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) as u32 }
}
