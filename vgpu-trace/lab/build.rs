//! Builds the lab's C stand-ins (ggml backends, libcudart, NVIDIA's driver libraries, an early
//! shim and llama-server) into `$OUT_DIR/lab`, linked the way the real files are: same SONAMEs,
//! DT_NEEDED entries and `$ORIGIN` RUNPATHs. The lab binary finds them through `VGPU_LAB_LIBS`.

use std::path::{Path, PathBuf};
use std::process::Command;

const CPU_VARIANTS: [&str; 7] = [
    "x64",
    "sse42",
    "sandybridge",
    "haswell",
    "skylakex",
    "icelake",
    "alderlake",
];

struct Cc {
    src: PathBuf,
    out: PathBuf,
}

impl Cc {
    /// Compiles `source` into `output`; `args` add SONAME, libraries and defines.
    fn build(&self, source: &str, output: &str, args: &[&str]) {
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let mut cmd = Command::new(&compiler);
        cmd.args([
            "-O2",
            "-g",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-parameter",
            "-I",
        ])
        .arg(&self.src)
        .arg(self.src.join(source))
        .arg("-o")
        .arg(self.out.join(output))
        .args(args)
        .arg(format!("-L{}", self.out.display()))
        .arg(format!("-L{}", self.out.join("link").display()));
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
        assert!(status.success(), "{cmd:?} failed");
    }
}

fn shared(soname: &str) -> [String; 2] {
    ["-shared".into(), format!("-Wl,-soname,{soname}")]
}

fn symlink(target: &str, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("symlink in OUT_DIR");
}

fn main() {
    let src = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("c");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("lab");
    std::fs::create_dir_all(out.join("link")).unwrap();
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rustc-env=VGPU_LAB_LIBS={}", out.display());
    let cc = Cc {
        src,
        out: out.clone(),
    };
    let origin = "-Wl,-rpath,$ORIGIN";
    let needed = "-Wl,--no-as-needed";

    let [so, name] = shared("libggml-base.so");
    cc.build("ggml-base.c", "libggml-base.so", &[&so, &name]);

    let [so, name] = shared("libggml.so");
    cc.build(
        "ggml.c",
        "libggml.so",
        &[&so, &name, origin, needed, "-lggml-base"],
    );
    for variant in CPU_VARIANTS {
        let file = format!("libggml-cpu-{variant}.so");
        let [so, name] = shared(&file);
        let define = format!("-DVARIANT={variant}");
        cc.build(
            "ggml-cpu.c",
            &file,
            &[&so, &name, &define, origin, needed, "-lggml-base"],
        );
    }

    // NVIDIA's driver libraries (file names carry the driver version) and the early shim.
    let [so, name] = shared("libcuda.so.1");
    cc.build("nvidia-cuda.c", "libcuda.so.570.133.07", &[&so, &name]);
    cc.build(
        "nvidia-cuda.c",
        "libvgpu-cuda-early.so",
        &[&so, &name, "-DEARLY_SHIM"],
    );
    let [so, name] = shared("libnvidia-ml.so.1");
    cc.build("nvidia-ml.c", "libnvidia-ml.so.570.133.07", &[&so, &name]);

    let [so, name] = shared("libcudart.so.12");
    cc.build("cudart.c", "libcudart.so.12.8.90", &[&so, &name]);

    // libggml-cuda.so links against libcuda.so.1 and libcudart.so.12 by their link names.
    symlink("../libcuda.so.570.133.07", &out.join("link/libcuda.so"));
    symlink("../libcudart.so.12.8.90", &out.join("link/libcudart.so"));
    let [so, name] = shared("libggml-cuda.so");
    cc.build(
        "ggml-cuda.c",
        "libggml-cuda.so",
        &[
            &so,
            &name,
            origin,
            needed,
            "-lggml-base",
            "-lcudart",
            "-lcuda",
        ],
    );

    cc.build(
        "llama-server.c",
        "llama-server",
        &[origin, needed, "-lggml", "-lggml-base"],
    );
}
