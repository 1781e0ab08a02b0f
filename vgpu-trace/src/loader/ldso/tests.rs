use super::*;
use crate::loader::fs::MemFs;
use crate::loader::ldcache::{Entry, X86_64_LIBC6};

/// The first bytes of an ELF shared object of the given class and machine.
fn elf_head(class64: bool, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = if class64 { 2 } else { 1 };
    h[5] = 1;
    h[16] = 3;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

fn lib() -> Vec<u8> {
    elf_head(true, 62)
}

fn facts(rpath: &[&str], runpath: &[&str]) -> ElfFacts {
    ElfFacts {
        ident: Ident::native(),
        soname: None,
        needed: Vec::new(),
        rpath: rpath.iter().map(|s| s.to_string()).collect(),
        runpath: runpath.iter().map(|s| s.to_string()).collect(),
        nodeflib: false,
        exports: Vec::new(),
        imports: Vec::new(),
    }
}

fn platform() -> Platform {
    Platform {
        subdirs: vec!["glibc-hwcaps/x86-64-v3".into(), String::new()],
        hwcaps: vec!["x86-64-v3".into()],
        ..Platform::debian_x86_64()
    }
}

fn winner(r: &Resolution) -> (&str, &Origin) {
    let w = r
        .winner()
        .unwrap_or_else(|| panic!("nothing found: {r:#?}"));
    (&w.path, &w.origin)
}

#[test]
fn ld_library_path_beats_cache_and_default_dirs() {
    let mut fs = MemFs::default();
    fs.file("/opt/vgpu/lib/libcuda.so.1", &lib())
        .file("/usr/lib/x86_64-linux-gnu/libcuda.so.1", &lib());
    let p = platform();
    let ctx = Context {
        platform: Some(&p),
        ld_library_path: Some("/opt/vgpu/lib".into()),
        cwd: "/".into(),
        ..Default::default()
    };
    let r = resolve("libcuda.so.1", &ctx, &fs);
    assert_eq!(
        winner(&r),
        ("/opt/vgpu/lib/libcuda.so.1", &Origin::LdLibraryPath)
    );
    // The hwcaps subdirectory was probed first.
    assert_eq!(
        r.candidates[0].path,
        "/opt/vgpu/lib/glibc-hwcaps/x86-64-v3/libcuda.so.1"
    );
    assert_eq!(r.candidates[0].verdict, Verdict::Missing);
}

#[test]
fn runpath_disables_rpath_and_comes_after_ld_library_path() {
    let mut fs = MemFs::default();
    fs.file("/rp/libx.so", &lib())
        .file("/run/libx.so", &lib())
        .file("/llp/libx.so", &lib());
    let p = platform();
    let exe = Requester {
        path: "/app/bin/exe".into(),
        facts: facts(&["/rp"], &[]),
    };
    let with_runpath = Requester {
        path: "/app/lib/liba.so".into(),
        facts: facts(&["/rp"], &["/run"]),
    };
    let mut ctx = Context {
        platform: Some(&p),
        chain: vec![with_runpath, exe.clone()],
        cwd: "/".into(),
        ..Default::default()
    };
    assert_eq!(winner(&resolve("libx.so", &ctx, &fs)).0, "/run/libx.so");
    ctx.ld_library_path = Some("/llp".into());
    assert_eq!(winner(&resolve("libx.so", &ctx, &fs)).0, "/llp/libx.so");
    // Without RUNPATH, the loader chain's RPATHs (here the executable's) come first.
    let plain = Requester {
        path: "/app/lib/liba.so".into(),
        facts: facts(&[], &[]),
    };
    ctx.chain = vec![plain, exe];
    let r = resolve("libx.so", &ctx, &fs);
    assert_eq!(
        winner(&r),
        (
            "/rp/libx.so",
            &Origin::Rpath {
                object: "/app/bin/exe".into()
            }
        )
    );
}

#[test]
fn origin_and_tokens_expand() {
    let mut fs = MemFs::default();
    fs.file("/usr/local/lib/ollama/libggml-base.so", &lib())
        .dir("/usr/local/lib/ollama/cuda_v12");
    let p = platform();
    let cuda = Requester {
        path: "/usr/local/lib/ollama/cuda_v12/libggml-cuda.so".into(),
        facts: facts(&[], &["$ORIGIN/..", "/x/${LIB}/$PLATFORM"]),
    };
    let ctx = Context {
        platform: Some(&p),
        chain: vec![cuda],
        cwd: "/".into(),
        ..Default::default()
    };
    let r = resolve("libggml-base.so", &ctx, &fs);
    // Spelled as ld.so spells it: `..` is not folded away.
    assert_eq!(
        winner(&r).0,
        "/usr/local/lib/ollama/cuda_v12/../libggml-base.so"
    );
    let r = resolve("libnope.so", &ctx, &fs);
    assert!(
        r.candidates
            .iter()
            .any(|c| c.path == "/x/lib/x86_64-linux-gnu/x86_64/libnope.so"),
        "{r:#?}"
    );
}

#[test]
fn wrong_class_is_skipped_and_explained() {
    let mut fs = MemFs::default();
    fs.file("/a/libcuda.so.1", &elf_head(false, 3))
        .file("/b/libcuda.so.1", &lib());
    let p = platform();
    let ctx = Context {
        platform: Some(&p),
        ld_library_path: Some("/a:/b".into()),
        cwd: "/".into(),
        ..Default::default()
    };
    let r = resolve("libcuda.so.1", &ctx, &fs);
    assert_eq!(winner(&r).0, "/b/libcuda.so.1");
    let rejected = r
        .candidates
        .iter()
        .find(|c| c.path == "/a/libcuda.so.1")
        .unwrap();
    assert_eq!(
        rejected.verdict,
        Verdict::Rejected("wrong ELF class (ELF32 i386)".into())
    );
}

#[test]
fn cache_then_default_dirs_and_nodeflib() {
    let mut fs = MemFs::default();
    fs.file("/usr/lib/libz.so.1", &lib())
        .file("/cached/libcuda.so.1", &lib());
    let cache = LdCache {
        entries: vec![
            Entry {
                soname: "libcuda.so.1".into(),
                path: "/cached/libcuda.so.1".into(),
                flags: X86_64_LIBC6,
                hwcaps: None,
                legacy_hwcap: 0,
            },
            Entry {
                soname: "libgone.so".into(),
                path: "/gone/libgone.so".into(),
                flags: X86_64_LIBC6,
                hwcaps: None,
                legacy_hwcap: 0,
            },
        ],
    };
    let p = platform();
    let mut ctx = Context {
        platform: Some(&p),
        cache: Some(&cache),
        cwd: "/".into(),
        ..Default::default()
    };
    assert_eq!(
        winner(&resolve("libcuda.so.1", &ctx, &fs)),
        ("/cached/libcuda.so.1", &Origin::Cache)
    );
    assert_eq!(
        winner(&resolve("libz.so.1", &ctx, &fs)),
        ("/usr/lib/libz.so.1", &Origin::Default)
    );
    // A stale cache entry is tried, fails, and the default dirs follow.
    let r = resolve("libgone.so", &ctx, &fs);
    assert!(r.winner().is_none());
    assert_eq!(
        r.candidates[0],
        Candidate {
            path: "/gone/libgone.so".into(),
            origin: Origin::Cache,
            verdict: Verdict::Missing
        }
    );
    let mut nodeflib = facts(&[], &[]);
    nodeflib.nodeflib = true;
    ctx.chain = vec![Requester {
        path: "/app/exe".into(),
        facts: nodeflib,
    }];
    assert!(resolve("libz.so.1", &ctx, &fs).candidates.is_empty());
}

#[test]
fn loaded_objects_and_paths() {
    let mut fs = MemFs::default();
    fs.file("/opt/x/libcuda.so.1", &lib());
    let p = platform();
    let ctx = Context {
        platform: Some(&p),
        loaded: vec![(
            "/opt/vgpu/lib/libvgpu-cuda.so".into(),
            Some("libcuda.so.1".into()),
        )],
        cwd: "/opt".into(),
        ..Default::default()
    };
    let r = resolve("libcuda.so.1", &ctx, &fs);
    assert_eq!(
        winner(&r),
        ("/opt/vgpu/lib/libvgpu-cuda.so", &Origin::AlreadyLoaded)
    );
    let r = resolve("x/libcuda.so.1", &ctx, &fs);
    assert_eq!(winner(&r), ("/opt/x/libcuda.so.1", &Origin::Path));
}
