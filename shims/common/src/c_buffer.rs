//! Copying text into buffers that C callers own. CUDA truncates to fit; NVML refuses.

use std::ffi::c_char;
use std::ptr;

/// The caller's buffer cannot hold the text and its terminating NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Copies as much of `text` as fits in `capacity` bytes at `dst`, always NUL-terminated
/// (the CUDA driver's rule for names and PCI bus ids). Does nothing when `capacity` is 0.
///
/// # Safety
/// `dst` must be valid for writes of `capacity` bytes.
pub unsafe fn write_truncated(dst: *mut c_char, capacity: usize, text: &[u8]) {
    let Some(room) = capacity.checked_sub(1) else {
        return;
    };
    let copied = text.len().min(room);
    // SAFETY: `copied + 1 <= capacity`, which the caller guarantees is writable.
    unsafe {
        ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), dst, copied);
        dst.add(copied).write(0);
    }
}

/// Copies `text` and a NUL to `dst`, or nothing at all when they do not fit in `capacity` bytes
/// (NVML's rule: the caller learns `NVML_ERROR_INSUFFICIENT_SIZE` instead of a cut string).
///
/// # Safety
/// `dst` must be valid for writes of `capacity` bytes.
pub unsafe fn write_whole(
    dst: *mut c_char,
    capacity: usize,
    text: &[u8],
) -> Result<(), BufferTooSmall> {
    if text.len() >= capacity {
        return Err(BufferTooSmall);
    }
    // SAFETY: `text.len() + 1 <= capacity`.
    unsafe { write_truncated(dst, capacity, text) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truncated(capacity: usize, text: &str) -> Vec<u8> {
        let mut buffer = vec![0x55_u8; 8];
        unsafe { write_truncated(buffer.as_mut_ptr().cast(), capacity, text.as_bytes()) };
        buffer
    }

    #[test]
    fn truncation_keeps_the_terminator() {
        assert_eq!(truncated(8, "abc"), b"abc\0\x55\x55\x55\x55");
        assert_eq!(truncated(3, "abcdef"), b"ab\0\x55\x55\x55\x55\x55");
        assert_eq!(truncated(1, "abc"), b"\0\x55\x55\x55\x55\x55\x55\x55");
        assert_eq!(truncated(0, "abc"), [0x55; 8]);
    }

    #[test]
    fn whole_copy_needs_room_for_the_terminator() {
        let mut buffer = [0x55_u8; 4];
        let dst = buffer.as_mut_ptr().cast();
        assert_eq!(unsafe { write_whole(dst, 4, b"abcd") }, Err(BufferTooSmall));
        assert_eq!(buffer, [0x55; 4], "nothing is written on failure");
        assert_eq!(unsafe { write_whole(dst, 4, b"abc") }, Ok(()));
        assert_eq!(&buffer, b"abc\0");
    }
}
