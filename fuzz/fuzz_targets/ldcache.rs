//! ld.so.cache from any bytes: a cache or an error, never a panic; no more entries than the
//! bytes can hold; and a lookup gives an x86-64 entry of the name asked for, from a supported
//! glibc-hwcaps subdirectory or none.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vgpu_trace::loader::ldcache::{LdCache, X86_64_LIBC6};

/// Bytes of one entry in the new format.
const ENTRY: usize = 24;

fuzz_target!(|data: &[u8]| {
    let Ok(cache) = LdCache::parse(data) else {
        return;
    };
    assert!(cache.entries.len() <= data.len() / ENTRY);
    let mut supported: Vec<String> = Vec::new();
    for e in &cache.entries {
        if let Some(h) = &e.hwcaps
            && !supported.contains(h)
        {
            supported.push(h.clone());
        }
    }
    for (i, e) in cache.entries.iter().take(16).enumerate() {
        // Every other name with no glibc-hwcaps subdirectory supported.
        let supported = if i % 2 == 0 { &supported[..] } else { &[] };
        if let Some(found) = cache.lookup(&e.soname, supported) {
            assert_eq!(found.soname, e.soname);
            assert_eq!(found.flags, X86_64_LIBC6);
            match &found.hwcaps {
                Some(h) => assert!(supported.contains(h)),
                None => assert_eq!(found.legacy_hwcap, 0),
            }
        }
    }
});
