//! Building records in the per-CPU scratch buffer and sending them.
//!
//! A record is `EventHeader`, the fixed payload `P`, then a blob. Only the used length is
//! copied into the ring buffer, so a 12-byte symbol name costs 12 bytes, not `STR_MAX`.
use core::{ffi::c_void, mem::size_of};

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{
        bpf_ktime_get_boot_ns, bpf_probe_read_kernel_str, bpf_probe_read_user,
        bpf_probe_read_user_str,
    },
};
use vgpu_trace_common::{
    BLOB_OFFSET, BLOB_ROOM, EventHeader, EventKind, SCRATCH_SIZE, STR_MAX, blob_flags, error_index,
};

use crate::maps::{EVENTS, SCRATCH, SCRATCH_SLOTS, Scratch, WAKE_AT, count_error};

const HEADER: usize = size_of::<EventHeader>();

/// A record being assembled, with payload type `P`; its scratch slot is free again when it is
/// sent or dropped.
pub struct Record<P> {
    slot: *mut Scratch,
    base: *mut u8,
    blob_len: u16,
    blob_flags: u16,
    _payload: core::marker::PhantomData<P>,
}

/// Where a string came from: user memory of the current process or kernel memory.
#[derive(Clone, Copy)]
pub enum Space {
    User,
    Kernel,
}

impl<P> Record<P> {
    const BLOB_START: usize = HEADER + size_of::<P>();

    /// In the first free slot of this CPU's; none (counted) when all are busy. Taking a slot
    /// is a read then a write, not atomic (5.10 has no exchange): a preemption between the two
    /// could still share one, a window of two instructions instead of a whole record's.
    #[inline(always)]
    pub fn new() -> Option<Self> {
        const { assert!(HEADER + size_of::<P>() <= BLOB_OFFSET) };
        for index in 0..SCRATCH_SLOTS {
            let Some(slot) = SCRATCH.get_ptr_mut(index) else {
                break;
            };
            // SAFETY: a per-CPU map value, alive for the program's run.
            unsafe {
                if core::ptr::read_volatile(&(*slot).busy) == 0 {
                    core::ptr::write_volatile(&mut (*slot).busy, 1);
                    return Some(Self {
                        slot,
                        base: (*slot).bytes.as_mut_ptr(),
                        blob_len: 0,
                        blob_flags: 0,
                        _payload: core::marker::PhantomData,
                    });
                }
            }
        }
        count_error(error_index::NO_SCRATCH);
        None
    }

    #[inline(always)]
    pub fn payload(&mut self) -> &mut P {
        unsafe { &mut *self.base.add(HEADER).cast::<P>() }
    }

    /// Whether a string could not be read (e.g. its page is not resident yet).
    #[inline(always)]
    pub fn read_failed(&self) -> bool {
        self.blob_flags & blob_flags::READ_FAILED != 0
    }

    /// Appends the NUL-terminated string at `src` to the blob. With `keep_nul` the
    /// terminator is kept (to separate list items). Returns false when nothing more fits.
    #[inline(always)]
    pub fn push_str(&mut self, space: Space, src: *const u8, keep_nul: bool) -> bool {
        const READ: usize = STR_MAX + 1;
        if src.is_null() {
            self.blob_flags |= blob_flags::NULL_PTR;
            return true;
        }
        if self.blob_len as usize >= STR_MAX {
            self.blob_flags |= blob_flags::TRUNCATED;
            return false;
        }
        // Always read up to STR_MAX + 1 bytes (a whole PATH_MAX string and its NUL, or a sign
        // that there was more) at an offset below STR_MAX: the blob has room for 2 * STR_MAX,
        // so only the offset needs a bound, and the mask gives it. The volatile
        // read keeps LLVM from dropping the mask on the strength of the check above, which the
        // verifier may not be able to follow.
        let off = unsafe { core::ptr::read_volatile(&self.blob_len) } as usize & (STR_MAX - 1);
        let dst = unsafe { self.base.add(Self::BLOB_START + off) }.cast::<c_void>();
        let ret = unsafe {
            match space {
                Space::User => bpf_probe_read_user_str(dst, READ as u32, src.cast()),
                Space::Kernel => bpf_probe_read_kernel_str(dst, READ as u32, src.cast()),
            }
        };
        if ret <= 0 {
            self.blob_flags |= blob_flags::READ_FAILED;
            return false;
        }
        // `ret` counts the NUL; a full read means there may have been more.
        let copied = ret as usize;
        let used = if keep_nul { copied } else { copied - 1 };
        if copied >= READ || off + used > STR_MAX {
            // Keep what fits in STR_MAX: the item is cut, and ends without its NUL.
            self.blob_flags |= blob_flags::TRUNCATED;
            self.blob_len = STR_MAX as u16;
            return false;
        }
        self.blob_len = (off + used) as u16;
        true
    }

    /// Makes the blob `len` bytes of user memory at `src`, or as many as there is room for.
    /// Returns whether `len` was more than that. One copy, whatever the length: the bound
    /// comes from a comparison, not a loop.
    #[inline(always)]
    pub fn copy_user(&mut self, src: u64, len: u64) -> bool {
        const ROOM: u64 = BLOB_ROOM as u64;
        let cut = len > ROOM;
        let n = if cut { ROOM } else { len };
        // Hidden from LLVM so the comparison the verifier needs stays in the bytecode.
        let n = unsafe { core::ptr::read_volatile(&n) };
        if n > ROOM {
            return cut;
        }
        let dst = unsafe { self.base.add(Self::BLOB_START) }.cast::<c_void>();
        if unsafe { bpf_probe_read_user(dst, n as u32, src as *const c_void) } != 0 {
            self.blob_flags |= blob_flags::READ_FAILED;
            return cut;
        }
        self.blob_len = n as u16;
        cut
    }

    /// Stamps the header and copies the record into the ring buffer.
    #[inline(always)]
    pub fn send(self, kind: EventKind) {
        self.send_waking(kind, false);
    }

    /// As [`Self::send`], waking the reader at once: the record starts work that must happen
    /// while its process is still there (reading the library it just opened).
    #[inline(always)]
    pub fn send_now(self, kind: EventKind) {
        self.send_waking(kind, true);
    }

    #[inline(always)]
    fn send_waking(self, kind: EventKind, now: bool) {
        let header = EventHeader {
            ts_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid_tgid: bpf_get_current_pid_tgid(),
            kind: kind as u32,
            blob_len: self.blob_len,
            blob_flags: self.blob_flags,
        };
        unsafe { self.base.cast::<EventHeader>().write(header) };
        // The volatile read hides what LLVM proved about the length, so the mask stays in
        // the bytecode and the verifier gets the bound it needs for the output size.
        let blob_len = unsafe { core::ptr::read_volatile(&self.blob_len) } as usize;
        let len = Self::BLOB_START + (blob_len & (2 * BLOB_ROOM - 1));
        if len > SCRATCH_SIZE {
            return;
        }
        let bytes = unsafe { core::slice::from_raw_parts(self.base, len) };
        // Userspace drains on a short timer; a wakeup per record would cost the traced process
        // a signal to the reader each time. Only a filling ring wakes it early.
        let flags = if now || EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKE_AT.load() {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
        if EVENTS.output::<[u8]>(bytes, u64::from(flags)).is_err() {
            count_error(error_index::RINGBUF_FULL);
        }
    }
}

impl<P> Drop for Record<P> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the slot `new` took, still this program's.
        unsafe { core::ptr::write_volatile(&mut (*self.slot).busy, 0) };
    }
}
