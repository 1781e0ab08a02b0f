//! Which paths are libraries, and which of those to arm before their code runs: one
//! definition for the kernel's scan of `openat` paths and for userspace.
//!
//! A path is a library when ".so" is in it. It is to be armed (`api`) when its file name names
//! a CUDA/NVML library ("libcuda" not followed by "r", since libcudart is the runtime;
//! "nvidia-ml", "nvml", "vgpu") or a C library ("libc.so", "libc-2.", "libdl.so"), whose
//! `dl*` functions a process in another mount namespace (a container) reaches through a file
//! of its own.
//!
//! Only the path's last words are looked at (`SCAN_WORDS`, 57 to 64 bytes): a library path
//! ends in its file name and ".so" suffix, and a bounded scan costs the kernel's verifier the
//! same on every kernel, with no `bpf_loop` (5.17+). The scan is branch-free, a byte at a time
//! over a sliding 8-byte window, so the verifier walks each word once.

/// The running state of one pass over a path. Each flag is its word's top bit: the scan only
/// ANDs, ORs and inverts whole words, and LLVM cannot turn that into a comparison (a branch
/// on BPF, which has no "set if"); the bit is read once, at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathScan {
    /// ".so" was seen.
    library: u64,
    /// The file name (since the last "/") names a library to arm.
    api: u64,
    /// The last 8 bytes seen.
    window: u64,
    /// "libcuda" was just seen: it counts unless an "r" follows.
    cuda_pending: u64,
}

/// `x | -x`: its top bit is set when `x` is not zero; an AND of several keeps it set when none
/// of them is zero.
#[inline(always)]
const fn nonzero_top(x: u64) -> u64 {
    x | x.wrapping_neg()
}

/// The values, which LLVM may no longer reason about: an asm statement that "changes" each
/// register, as libbpf's `barrier_var`. LLVM knows `x | -x` for a test of `x != 0` and, on a
/// target without a "set if" instruction (BPF), would compile the tests into branches: a
/// byte's tests would then be hundreds of paths for the kernel's verifier to walk. Not
/// `pure`: the statements keep their order, so one byte's tests end before the next byte's
/// begin, and LLVM cannot interleave eight bytes into more live values than BPF has
/// registers.
#[inline(always)]
fn opaque<const N: usize>(values: [u64; N]) -> [u64; N] {
    #[cfg(target_arch = "bpf")]
    {
        let mut v = values;
        for x in v.iter_mut() {
            // A move to itself rather than an empty template: a statement of no instruction
            // leaves two line records on one instruction, which the kernel refuses.
            // SAFETY: the register keeps its value.
            unsafe { core::arch::asm!("{0} = {0}", inout(reg) * x, options(nomem, nostack)) };
        }
        v
    }
    #[cfg(not(target_arch = "bpf"))]
    values
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
        const LIBCUDA: u64 = tag(b"libcuda");
        const NVML: u64 = tag(b"nvml");
        const NVIDIA_ML: u64 = tag(b"idia-ml");
        const VGPU: u64 = tag(b"vgpu");
        const LIBC: u64 = tag(b"libc.so");
        const LIBC_OLD: u64 = tag(b"libc-2.");
        const LIBDL: u64 = tag(b"libdl.so");
        let [window] = opaque([(self.window << 8) | c]);
        let [not_r, not_slash, not_so, not_libcuda, no_name] = opaque([
            nonzero_top(c ^ b'r' as u64),
            nonzero_top(c ^ b'/' as u64),
            nonzero_top((window & 0xff_ffff) ^ SO),
            nonzero_top((window & 0xff_ffff_ffff_ffff) ^ LIBCUDA),
            nonzero_top((window & 0xffff_ffff) ^ NVML)
                & nonzero_top((window & 0xff_ffff_ffff_ffff) ^ NVIDIA_ML)
                & nonzero_top((window & 0xffff_ffff) ^ VGPU)
                & nonzero_top((window & 0xff_ffff_ffff_ffff) ^ LIBC)
                & nonzero_top((window & 0xff_ffff_ffff_ffff) ^ LIBC_OLD)
                & nonzero_top(window ^ LIBDL),
        ]);
        self.window = window;
        // "libcuda" counts unless this byte is the "r" of "libcudart".
        self.api |= self.cuda_pending & not_r;
        // Names count only in the file name: a "/" forgets what the directories said.
        self.api &= not_slash;
        self.library |= !not_so;
        self.cuda_pending = !not_libcuda;
        self.api |= !no_name;
    }

    /// ".so" was seen.
    #[inline(always)]
    pub fn library(&self) -> bool {
        self.library >> 63 != 0
    }

    /// The file name names a CUDA/NVML or C library.
    #[inline(always)]
    pub fn api(&self) -> bool {
        self.api >> 63 != 0
    }
}

/// What a path looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKind {
    pub library: bool,
    pub api: bool,
}

/// Bytes of a path read to be scanned, its NUL included: longer paths are cut (PATH_MAX).
pub const PATH_READ: usize = crate::STR_MAX;
/// Words (8 bytes each, counted from the path's start) scanned: the last ones holding the path.
pub const SCAN_WORDS: usize = 8;

/// The words to scan, as indices into the path read as little-endian words and zero-padded:
/// the last `SCAN_WORDS` of the `used` words that hold the path and its NUL.
#[inline(always)]
pub fn scan_window(read_len: usize) -> core::ops::Range<usize> {
    let used = (read_len + 1).div_ceil(8);
    used.saturating_sub(SCAN_WORDS)..used
}

/// The same verdict as the kernel's on `path` (up to its first NUL).
pub fn path_kind(path: &[u8]) -> PathKind {
    let len = path
        .iter()
        .take(PATH_READ - 1)
        .position(|&b| b == 0)
        .unwrap_or(path.len().min(PATH_READ - 1));
    let mut scan = PathScan::new();
    for index in scan_window(len) {
        let mut word = [0u8; 8];
        for (i, b) in word.iter_mut().enumerate() {
            let at = index * 8 + i;
            if at < len {
                *b = path[at];
            }
        }
        scan.word(u64::from_le_bytes(word));
    }
    PathKind {
        library: scan.library(),
        api: scan.api(),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String};

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

    /// The rules in plain string operations, on the bytes the window covers.
    fn reference(path: &[u8]) -> (bool, bool) {
        let len = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        let len = len.min(PATH_READ - 1);
        let window = scan_window(len);
        let seen = &path[(window.start * 8).min(len)..len];
        let text = String::from_utf8_lossy(seen);
        let name = text.rsplit('/').next().unwrap_or("");
        let cuda = name
            .match_indices("libcuda")
            .any(|(at, m)| !name[at + m.len()..].starts_with('r'));
        let named = ["nvml", "idia-ml", "vgpu", "libc.so", "libc-2.", "libdl.so"]
            .iter()
            .any(|n| name.contains(n));
        (text.contains(".so"), cuda || named)
    }

    #[test]
    fn the_scan_is_the_reference_on_many_paths() {
        let parts = [
            "/",
            "lib",
            "cuda",
            "libcuda",
            "r",
            "t",
            ".so",
            ".",
            "so",
            "nvidia-ml",
            "nvml",
            "vgpu",
            "libc",
            ".so.6",
            "-2.",
            "libdl",
            "x86_64-linux-gnu",
            "ollama",
            "0123456789abcdef",
        ];
        // A fixed linear congruential sequence: the same paths on every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut path = String::new();
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for _ in 0..(seed >> 60) as usize + 1 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                path.push_str(parts[(seed >> 33) as usize % parts.len()]);
            }
            let k = path_kind(path.as_bytes());
            assert_eq!((k.library, k.api), reference(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn only_the_end_of_a_path_counts() {
        // The end of a long path is scanned, whatever comes before it.
        let long = [b"/".repeat(300), b"libcuda.so.1".to_vec()].concat();
        assert_eq!(kind(std::str::from_utf8(&long).unwrap()), (true, true));
        // ".so" far from the end is out of the window.
        let dir = format!("/a.so/{}/notes.txt", "x".repeat(80));
        assert_eq!(kind(&dir), (false, false));
        // A file name longer than the window keeps only its end.
        let name = format!("/lib/libcuda{}.so.1", "x".repeat(70));
        assert_eq!(kind(&name), (true, false));
        // Past PATH_MAX the read is cut, and its end is what is scanned.
        let cut = format!("/{}/libcuda.so.1", "d".repeat(PATH_READ));
        assert_eq!(kind(&cut), (false, false));
    }

    #[test]
    fn words_and_bytes_agree() {
        let path = b"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\0\0\0\0\0";
        let mut by_word = PathScan::new();
        for chunk in path.chunks(8).filter(|c| c.len() == 8) {
            by_word.word(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let k = path_kind(path);
        assert_eq!((by_word.library(), by_word.api()), (k.library, k.api));
    }
}
