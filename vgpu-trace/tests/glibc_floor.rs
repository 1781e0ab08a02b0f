//! The shims users get (`cargo xtask shims build`: cargo-zigbuild, linked against glibc 2.17's
//! symbol versions) need no newer glibc, keep their NVIDIA sonames, and load and answer in a
//! Debian 11 root (glibc 2.31), where cargo's own build against the host's glibc does not load.
use std::path::{Path, PathBuf};
use std::process::Command;

use object::elf::{DT_SONAME, FileHeader64};
use object::read::elf::{Dyn as _, FileHeader as _};

mod common;
use common::*;

/// The floor the shims are built for (xtask/src/shims.rs).
const FLOOR: [u32; 2] = [2, 17];
/// Each shim as cargo names it, and its soname.
const SHIMS: [(&str, &str); 2] = [
    ("libvgpu_cuda.so", "libcuda.so.1"),
    ("libvgpu_nvml.so", "libnvidia-ml.so.1"),
];

/// The floor build: named by `cargo xtask test`, which makes it; else where cargo-zigbuild
/// puts it, and a plain `cargo test` without one skips (saying so).
fn floor_dir(test: &str) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VGPU_TEST_FLOOR_SHIMS") {
        return Some(dir.into());
    }
    let target = fixture("libvgpu_cuda.so")
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned();
    let dir = target.join("x86_64-unknown-linux-gnu/release");
    if dir.join(SHIMS[0].0).exists() {
        return Some(dir);
    }
    vgpu_trace_fixtures::skip_test(
        test,
        &format!(
            "no floor build in {}: cargo xtask shims build",
            dir.display()
        ),
    );
    None
}

/// The glibc versions `lib` needs (its SHT_GNU_VERNEED entries), as numbers; GLIBC_PRIVATE
/// reads as the highest version of all.
fn glibc_versions(lib: &Path) -> Vec<Vec<u32>> {
    let data = std::fs::read(lib).unwrap();
    let elf = FileHeader64::<object::Endianness>::parse(&*data).unwrap();
    let endian = elf.endian().unwrap();
    let sections = elf.sections(endian, &*data).unwrap();
    let (mut needs, link) = sections.gnu_verneed(endian, &*data).unwrap().unwrap();
    let strings = sections.strings(endian, &*data, link).unwrap();
    let mut versions = Vec::new();
    while let Some((_, mut aux)) = needs.next().unwrap() {
        while let Some(aux) = aux.next().unwrap() {
            let name = String::from_utf8_lossy(aux.name(endian, strings).unwrap()).into_owned();
            if let Some(v) = name.strip_prefix("GLIBC_") {
                versions.push(
                    v.split('.')
                        .map(|n| n.parse().unwrap_or(u32::MAX))
                        .collect(),
                );
            }
        }
    }
    versions
}

fn soname(lib: &Path) -> String {
    let data = std::fs::read(lib).unwrap();
    let elf = FileHeader64::<object::Endianness>::parse(&*data).unwrap();
    let endian = elf.endian().unwrap();
    let sections = elf.sections(endian, &*data).unwrap();
    let (dynamic, link) = sections.dynamic(endian, &*data).unwrap().unwrap();
    let strings = sections.strings(endian, &*data, link).unwrap();
    let entry = dynamic
        .iter()
        .find(|d| d.tag(endian) == DT_SONAME)
        .expect("a DT_SONAME");
    String::from_utf8_lossy(entry.string(endian, strings).unwrap()).into_owned()
}

#[test]
fn floor_shims_need_no_glibc_above_the_floor_and_keep_their_sonames() {
    let Some(dir) = floor_dir("floor_shims_need_no_glibc_above_the_floor_and_keep_their_sonames")
    else {
        return;
    };
    for (file, name) in SHIMS {
        let lib = dir.join(file);
        let versions = glibc_versions(&lib);
        assert!(
            !versions.is_empty(),
            "{} needs no GLIBC_ version",
            lib.display()
        );
        let max = versions.iter().max().unwrap();
        assert!(
            max.as_slice() <= FLOOR.as_slice(),
            "{} needs GLIBC_{max:?}, above the floor {FLOOR:?}",
            lib.display()
        );
        assert_eq!(soname(&lib), name, "{}", lib.display());
    }
}

/// Builds shim-floor.c in `root`'s /tmp with its own compiler, runs it there on each pair of
/// shims (copied in as libcuda.so.1 and libnvidia-ml.so.1), and returns what it printed.
fn run_in_bullseye(root: &Path, shims: &[(&str, PathBuf)]) -> Vec<std::process::Output> {
    let dir = tempfile::Builder::new()
        .prefix("vgpu-trace-floor-")
        .tempdir_in(root.join("tmp"))
        .unwrap();
    let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shim-floor.c");
    std::fs::copy(source, dir.path().join("shim-floor.c")).unwrap();
    let chroot = |program: &Path| {
        let mut c = Command::new("chroot");
        c.arg(root)
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    };
    let built = chroot(Path::new("gcc"))
        .arg("-o")
        .arg(inside.join("shim-floor"))
        .arg(inside.join("shim-floor.c"))
        // glibc before 2.34 keeps dlopen in libdl.
        .arg("-ldl")
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let mut outputs = Vec::new();
    for (tag, from) in shims {
        std::fs::create_dir(dir.path().join(tag)).unwrap();
        for (file, name) in SHIMS {
            std::fs::copy(from.join(file), dir.path().join(tag).join(name)).unwrap();
        }
        let out = chroot(&inside.join("shim-floor"))
            .args(SHIMS.map(|(_, name)| inside.join(tag).join(name)))
            .output()
            .unwrap();
        outputs.push(out);
    }
    outputs
}

#[test]
#[ignore = "needs root and the Debian 11 root filesystem (cargo xtask test runs it)"]
fn floor_shims_load_and_answer_on_glibc_2_31() {
    let Some(floor) = floor_dir("floor_shims_load_and_answer_on_glibc_2_31") else {
        return;
    };
    let bullseye = PathBuf::from(std::env::var_os("VGPU_TEST_ROOTFS_BULLSEYE").expect(
        "VGPU_TEST_ROOTFS_BULLSEYE: a Debian 11 root filesystem with gcc; run through \
         `cargo xtask test`, which makes it",
    ));
    // cargo's own build, against the host's glibc: what the floor build is for.
    let plain = fixture("libvgpu_cuda.so").parent().unwrap().to_owned();
    let outputs = run_in_bullseye(&bullseye, &[("floor", floor), ("plain", plain.clone())]);
    let (out, plain_out) = (&outputs[0], &outputs[1]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let facts = facts(&out.stdout);
    for (key, value) in [
        ("cuInit", "0"),
        ("cuDeviceGetCount", "0 count=1"),
        ("nvmlInit_v2", "0"),
        ("nvmlDeviceGetCount_v2", "0 nvml_count=1"),
    ] {
        assert_eq!(facts.get(key).map(String::as_str), Some(value), "{said}");
    }
    // Shows the root really is older than the host: a build needing more than 2.31 fails there.
    let plain_needs = glibc_versions(&plain.join("libvgpu_cuda.so"));
    if plain_needs.iter().max().unwrap().as_slice() > [2, 31].as_slice() {
        let said = String::from_utf8_lossy(&plain_out.stdout);
        assert!(
            !plain_out.status.success() && said.contains("not found") && said.contains("GLIBC_2.3"),
            "{plain_out:?}"
        );
    } else {
        eprintln!("cargo's own build needs no glibc above 2.31 here: nothing to contrast");
    }
}
