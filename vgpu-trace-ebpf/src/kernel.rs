//! Reading kernel structures by member offsets that userspace found in BTF and patched into
//! globals (`offsets::UNKNOWN` when the running kernel lacks the member).
use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use vgpu_trace_common::offsets;

/// The `T` at `base` + the offset in `off`; `None` for a null base, an unknown offset or a
/// failed read.
#[inline(always)]
pub fn read_at<T>(base: u64, off: &Global<u32>) -> Option<T> {
    let off = off.load();
    if base == 0 || off == offsets::UNKNOWN {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.ok()
}
