//! Which paths are libraries, and which of those to arm before their code runs: one
//! definition for the kernel's scan of `openat` paths and for userspace.
//!
//! A path is a library when ".so" is in it. It is to be armed (`api`) when its file name names
//! a CUDA/NVML library ("libcuda" not followed by "r", since libcudart is the runtime;
//! "nvidia-ml", "nvml", "vgpu") or a C library ("libc.so", "libc-2.", "libdl.so"), whose
//! `dl*` functions a process in another mount namespace (a container) reaches through a file
//! of its own. The scan is branch-free, a byte at a time over a sliding 8-byte window, so the
//! kernel's verifier walks it once.

/// The running state of one pass over a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathScan {
    /// 1 once ".so" was seen.
    pub library: u64,
    /// 1 while the file name (since the last "/") names a library to arm.
    pub api: u64,
    /// The last 8 bytes seen.
    window: u64,
    /// "libcuda" was just seen: it counts unless an "r" follows.
    cuda_pending: u64,
}

/// 1 when `x` is zero, else 0, without a branch.
#[inline(always)]
const fn is_zero(x: u64) -> u64 {
    1 ^ ((x | x.wrapping_neg()) >> 63)
}

const fn tag(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() {
        v = (v << 8) | s[i] as u64;
        i += 1;
    }
    v
}

impl PathScan {
    pub const fn new() -> Self {
        Self {
            library: 0,
            api: 0,
            window: 0,
            cuda_pending: 0,
        }
    }

    /// Eight bytes of the path, as a little-endian word (its first byte lowest).
    #[inline(always)]
    pub fn word(&mut self, word: u64) {
        self.byte(word & 0xff);
        self.byte((word >> 8) & 0xff);
        self.byte((word >> 16) & 0xff);
        self.byte((word >> 24) & 0xff);
        self.byte((word >> 32) & 0xff);
        self.byte((word >> 40) & 0xff);
        self.byte((word >> 48) & 0xff);
        self.byte(word >> 56);
    }

    /// One byte of the path; the NUL after it must be fed too (it settles "libcuda" at the end).
    #[inline(always)]
    pub fn byte(&mut self, c: u64) {
        const SO: u64 = tag(b".so");
        const BCUDA: u64 = tag(b"bcuda");
        const NVML: u64 = tag(b"nvml");
        const NVIDIA_ML: u64 = tag(b"idia-ml");
        const VGPU: u64 = tag(b"vgpu");
        const LIBC: u64 = tag(b"libc.so");
        const LIBC_OLD: u64 = tag(b"libc-2.");
        const LIBDL: u64 = tag(b"libdl.so");
        self.api |= self.cuda_pending & (1 ^ is_zero(c ^ b'r' as u64));
        let window = (self.window << 8) | c;
        self.window = window;
        // Names count only in the file name: a "/" forgets what the directories said.
        self.api &= 1 ^ is_zero(c ^ b'/' as u64);
        self.library |= is_zero((window & 0xff_ffff) ^ SO);
        self.cuda_pending = is_zero((window & 0xff_ffff_ffff) ^ BCUDA);
        self.api |= is_zero((window & 0xffff_ffff) ^ NVML)
            | is_zero((window & 0xff_ffff_ffff_ffff) ^ NVIDIA_ML)
            | is_zero((window & 0xffff_ffff) ^ VGPU)
            | is_zero((window & 0xff_ffff_ffff_ffff) ^ LIBC)
            | is_zero((window & 0xff_ffff_ffff_ffff) ^ LIBC_OLD)
            | is_zero(window ^ LIBDL);
    }
}

/// What a path looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKind {
    pub library: bool,
    pub api: bool,
}

/// The same verdict as the kernel's on the first `PATH_SCAN` bytes of `path`.
pub fn path_kind(path: &[u8]) -> PathKind {
    let mut scan = PathScan::new();
    let len = path
        .iter()
        .take(crate::PATH_SCAN - 1)
        .position(|&b| b == 0)
        .unwrap_or(path.len().min(crate::PATH_SCAN - 1));
    for &b in &path[..len] {
        scan.byte(b as u64);
    }
    scan.byte(0);
    PathKind {
        library: scan.library != 0,
        api: scan.api != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(path: &str) -> (bool, bool) {
        let k = path_kind(path.as_bytes());
        (k.library, k.api)
    }

    #[test]
    fn libraries_and_those_to_arm() {
        assert_eq!(kind("/usr/lib/x86_64-linux-gnu/libcuda.so.1"), (true, true));
        assert_eq!(kind("libcuda.so.570.133.07"), (true, true));
        assert_eq!(kind("/opt/vgpu/lib/libnvidia-ml.so.1"), (true, true));
        assert_eq!(kind("/opt/x/libvgpu-cuda.so"), (true, true));
        assert_eq!(kind("libnvml_stub.so"), (true, true));
        assert_eq!(kind("/lib/x86_64-linux-gnu/libc.so.6"), (true, true));
        assert_eq!(kind("/lib64/libc-2.17.so"), (true, true));
        assert_eq!(kind("libdl.so.2"), (true, true));
        // The runtime is no driver; a directory's name is not the file's.
        assert_eq!(
            kind("/usr/lib/ollama/cuda_v12/libcudart.so.12"),
            (true, false)
        );
        assert_eq!(kind("/opt/vgpu/lib/libm.so.6"), (true, false));
        assert_eq!(kind("/usr/local/cuda/lib64/libcublas.so.12"), (true, false));
        assert_eq!(kind("/etc/ld.so.cache"), (true, false));
        assert_eq!(kind("/tmp/notes.txt"), (false, false));
        // "libcuda" at the very end is settled by the NUL.
        assert_eq!(kind("/x/libcuda"), (false, true));
    }

    #[test]
    fn words_and_bytes_agree_and_only_the_scanned_prefix_counts() {
        let path = b"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\0\0\0\0\0";
        let mut by_word = PathScan::new();
        for chunk in path.chunks(8).filter(|c| c.len() == 8) {
            by_word.word(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let k = path_kind(path);
        assert_eq!((by_word.library != 0, by_word.api != 0), (k.library, k.api));
        let long = [b"/".repeat(crate::PATH_SCAN), b"libcuda.so.1".to_vec()].concat();
        assert_eq!(
            path_kind(&long),
            PathKind {
                library: false,
                api: false
            }
        );
    }
}
