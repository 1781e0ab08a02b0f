//! Differential tests: for generated layouts (RPATH/RUNPATH on the executable and on the library
//! that needs the probe, LD_LIBRARY_PATH, $ORIGIN, glibc-hwcaps subdirectories, symlinks,
//! dangling links, wrong-class files, and with root a private ld.so.cache), the resolution model
//! must pick the file glibc's ld.so really loads (asked with LD_TRACE_LOADED_OBJECTS=1).
use std::path::{Path, PathBuf};
use std::process::Command;

use vgpu_trace::loader::elf;
use vgpu_trace::loader::fs::RootFs;
use vgpu_trace::loader::ldcache::LdCache;
use vgpu_trace::loader::ldso::{Context, Requester, resolve};
use vgpu_trace::sysinfo::loader_platform;

const SLOTS: [&str; 6] = [
    "rp",
    "run",
    "llp",
    "origin",
    "cached",
    "llp/glibc-hwcaps/x86-64-v2",
];

struct Lab {
    base: PathBuf,
    /// A private dir with a random name, removed on drop.
    _scratch: tempfile::TempDir,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("vgpu-trace-ldso-{tag}-"))
            .tempdir()
            .unwrap();
        let base = scratch.path().to_path_buf();
        std::fs::create_dir_all(base.join("stub")).unwrap();
        std::fs::write(base.join("probe.c"), "int probe(void) { return 1; }\n").unwrap();
        std::fs::write(
            base.join("a.c"),
            "int probe(void); int a(void) { return probe(); }\n",
        )
        .unwrap();
        std::fs::write(
            base.join("main.c"),
            "int a(void); int main(void) { return a() - 1; }\n",
        )
        .unwrap();
        let lab = Self {
            base,
            _scratch: scratch,
        };
        lab.cc(&[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libprobe.so.1",
            "probe.c",
            "-o",
            "stub/libprobe.so.1",
        ]);
        std::os::unix::fs::symlink("libprobe.so.1", lab.base.join("stub/libprobe.so")).unwrap();
        lab
    }

    fn cc(&self, args: &[&str]) {
        let status = Command::new("cc")
            .current_dir(&self.base)
            .args(args)
            .status()
            .expect("cc");
        assert!(status.success(), "cc {args:?}");
    }
}

/// What goes in a slot: nothing, the library, a symlink to it, a dangling link, or an ELF32 file.
#[derive(Clone, Copy, Debug)]
enum Put {
    Nothing,
    Library,
    Link,
    Dangling,
    WrongClass,
}

#[derive(Clone, Copy, Debug)]
enum Tags {
    None,
    Rpath,
    Runpath,
}

#[derive(Debug)]
struct Layout {
    slots: [Put; 6],
    exe: Tags,
    liba: Tags,
    ld_library_path: bool,
    /// liba's path list uses $ORIGIN instead of absolute dirs.
    origin_token: bool,
}

/// A small deterministic generator, so a failing layout can be rebuilt from its number.
fn layouts(count: u64, with_cache: bool) -> Vec<Layout> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    (0..count)
        .map(|_| {
            let slots = std::array::from_fn(|i| {
                if i == 4 && !with_cache {
                    return Put::Nothing;
                }
                match next(8) {
                    0..=2 => Put::Nothing,
                    3 | 4 => Put::Library,
                    5 => Put::Link,
                    6 => Put::Dangling,
                    _ => Put::WrongClass,
                }
            });
            let tags = |n| match n {
                0 => Tags::None,
                1 => Tags::Rpath,
                _ => Tags::Runpath,
            };
            Layout {
                slots,
                exe: tags(next(3)),
                liba: tags(next(3)),
                ld_library_path: next(2) == 0,
                origin_token: next(2) == 0,
            }
        })
        .collect()
}

fn elf32() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 1;
    h[5] = 1;
    h[16] = 3;
    h[18] = 3;
    h
}

fn tag_args(tags: Tags, dirs: &str) -> Vec<String> {
    match tags {
        Tags::None => Vec::new(),
        Tags::Rpath => vec![
            "-Wl,--disable-new-dtags".into(),
            format!("-Wl,-rpath,{dirs}"),
        ],
        Tags::Runpath => vec![
            "-Wl,--enable-new-dtags".into(),
            format!("-Wl,-rpath,{dirs}"),
        ],
    }
}

/// ld.so's answer for each needed name: `name => path` or `not found`.
fn ld_so_answer(
    exe: &Path,
    env: &[(&str, String)],
    cache: Option<&Path>,
) -> Vec<(String, Option<String>)> {
    let mut cmd = match cache {
        Some(cache) => {
            let mut c = Command::new("unshare");
            // Only the traced program gets LD_TRACE_LOADED_OBJECTS, not the shell before it.
            let script =
                "mount --bind \"$0\" /etc/ld.so.cache && exec env LD_TRACE_LOADED_OBJECTS=1 \"$1\"";
            c.args(["-m", "sh", "-c", script]).arg(cache).arg(exe);
            c
        }
        None => {
            let mut c = Command::new(exe);
            c.env("LD_TRACE_LOADED_OBJECTS", "1");
            c
        }
    };
    let out = cmd
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(" => ")?;
            let path = (!rest.starts_with("not found"))
                .then(|| rest.split(" (").next().unwrap_or(rest).to_string());
            Some((name.to_string(), path))
        })
        .collect()
}

fn requester(path: &Path) -> Requester {
    let facts = elf::parse(std::fs::read(path).unwrap().as_slice()).unwrap();
    Requester {
        path: path.to_string_lossy().into_owned(),
        facts,
    }
}

fn check_layouts(tag: &str, count: u64, with_cache: bool) {
    let lab = Lab::new(tag);
    let platform = loader_platform();
    let host_cache = LdCache::parse(&std::fs::read("/etc/ld.so.cache").unwrap_or_default()).ok();
    let mut origins: std::collections::BTreeMap<String, usize> = Default::default();
    for (n, layout) in layouts(count, with_cache).into_iter().enumerate() {
        let dir = lab.base.join(format!("l{n}"));
        for slot in SLOTS {
            std::fs::create_dir_all(dir.join(slot)).unwrap();
        }
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::copy(
            lab.base.join("stub/libprobe.so.1"),
            dir.join("real-libprobe.so"),
        )
        .unwrap();
        for (slot, put) in SLOTS.iter().zip(layout.slots) {
            let path = dir.join(slot).join("libprobe.so.1");
            match put {
                Put::Nothing => {}
                Put::Library => {
                    std::fs::copy(lab.base.join("stub/libprobe.so.1"), &path).unwrap();
                }
                Put::Link => {
                    std::os::unix::fs::symlink(dir.join("real-libprobe.so"), &path).unwrap()
                }
                Put::Dangling => std::os::unix::fs::symlink(dir.join("gone.so"), &path).unwrap(),
                Put::WrongClass => std::fs::write(&path, elf32()).unwrap(),
            }
        }
        let d = |s: &str| dir.join(s).to_string_lossy().into_owned();
        let liba_dirs = if layout.origin_token {
            "$ORIGIN/../rp:$ORIGIN".to_string()
        } else {
            format!("{}:{}", d("run"), d("origin"))
        };
        let mut args: Vec<String> = vec![
            "-shared".into(),
            "-fPIC".into(),
            "-Wl,-soname,liba.so".into(),
            "a.c".into(),
        ];
        args.extend([
            "-o".into(),
            format!("{}/liba.so", d("origin")),
            "-Lstub".into(),
            "-Wl,--no-as-needed".into(),
            "-lprobe".into(),
        ]);
        args.extend(tag_args(layout.liba, &liba_dirs));
        lab.cc(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let exe = dir.join("bin/exe");
        let mut args: Vec<String> = vec![
            "main.c".into(),
            "-o".into(),
            exe.to_string_lossy().into_owned(),
        ];
        args.extend([
            format!("-L{}", d("origin")),
            "-la".into(),
            "-Lstub".into(),
            "-Wl,--allow-shlib-undefined".into(),
        ]);
        // The executable always finds liba through its own path list.
        let exe_tags = match layout.exe {
            Tags::None => Tags::Rpath,
            other => other,
        };
        let exe_dirs = if matches!(layout.exe, Tags::None) {
            d("origin")
        } else {
            format!("{}:{}", d("rp"), d("origin"))
        };
        args.extend(tag_args(exe_tags, &exe_dirs));
        lab.cc(&args.iter().map(String::as_str).collect::<Vec<_>>());

        let mut env = Vec::new();
        if layout.ld_library_path {
            env.push((
                "LD_LIBRARY_PATH",
                format!("{}:{}", d("llp"), d("nonexistent")),
            ));
        }
        let private = with_cache.then(|| {
            vgpu_lab::install::private_ld_cache(&dir, &[PathBuf::from(d("cached"))]).unwrap()
        });
        let cache = match &private {
            Some(path) => Some(LdCache::parse(&std::fs::read(path).unwrap()).unwrap()),
            None => host_cache.clone(),
        };
        let answer = ld_so_answer(&exe, &env, private.as_deref());
        let truth = |name: &str| {
            answer
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p.clone())
        };
        let Some(Some(liba_path)) = truth("liba.so") else {
            panic!("layout {n} {layout:?}: ld.so did not find liba.so: {answer:?}");
        };
        let fs = RootFs::host();
        let ld_library_path = env.first().map(|(_, v)| v.clone());
        let exe_req = requester(&exe);
        let ctx = Context {
            platform: Some(&platform),
            cache: cache.as_ref(),
            ld_library_path: ld_library_path.clone(),
            chain: vec![exe_req.clone()],
            loaded: Vec::new(),
            cwd: "/".into(),
        };
        let model = resolve("liba.so", &ctx, &fs);
        assert_eq!(
            model.winner().map(|c| c.path.clone()),
            Some(liba_path.clone()),
            "layout {n} {layout:?}: liba.so\n{model:#?}"
        );
        let ctx = Context {
            chain: vec![requester(Path::new(&liba_path)), exe_req],
            ..ctx
        };
        let model = resolve("libprobe.so.1", &ctx, &fs);
        let expected = truth("libprobe.so.1").flatten();
        assert_eq!(
            model.winner().map(|c| c.path.clone()),
            expected,
            "layout {n} {layout:?}: libprobe.so.1\n{model:#?}\nld.so: {answer:?}"
        );
        let origin = model.winner().map_or("not found".into(), |c| {
            format!("{:?}", c.origin)
                .split([' ', '{'])
                .next()
                .unwrap_or("")
                .to_string()
        });
        *origins.entry(origin).or_default() += 1;
    }
    // Keeps the generator honest: the layouts must exercise every way of being found.
    eprintln!("{count} layouts, ld.so and the model agree; libprobe.so.1 found by: {origins:?}");
    for needed in ["Rpath", "Runpath", "not found"]
        .iter()
        .chain(if with_cache {
            &["Cache"][..]
        } else {
            &["LdLibraryPath"][..]
        })
    {
        assert!(
            origins.contains_key(*needed),
            "no layout was resolved by {needed}: {origins:?}"
        );
    }
}

#[test]
fn model_agrees_with_ld_so() {
    check_layouts("plain", 40, false);
}

#[test]
#[ignore = "needs root: a private ld.so.cache in a mount namespace"]
fn model_agrees_with_ld_so_using_a_private_cache() {
    check_layouts("cache", 32, true);
}
