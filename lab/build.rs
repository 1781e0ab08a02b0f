//! Builds the lab's C stand-ins (ggml backends, libcudart 12 and 13, NVIDIA's driver libraries,
//! an early shim, MLX and llama-server) into `$OUT_DIR/lab`, linked the way the real files are: same SONAMEs,
//! DT_NEEDED entries and `$ORIGIN` RUNPATHs. The lab binary finds them through `VGPU_LAB_LIBS`.

use std::path::{Path, PathBuf};
use std::process::Command;

// ggml's 14 CPU variants; eras A and B ship the 7 of Ollama's vendored ggml.
include!("src/cpu_variants.rs");

/// A bundled CUDA dir: its runtime's file name and version, and the architectures its ggml
/// build compiled (llama-server's `CUDA : ARCHS =`, from Ollama v0.33's CMake presets).
struct CudaDir {
    dir: &'static str,
    major: u32,
    cudart: &'static str,
    cudart_version: u32,
    archs: &'static str,
}

const CUDA_DIRS: [CudaDir; 2] = [
    CudaDir {
        dir: "cuda_v12",
        major: 12,
        cudart: "libcudart.so.12.8.90",
        cudart_version: 12080,
        archs: "500,520,600,610,700,750,800,860,890,900,1000,1200",
    },
    CudaDir {
        dir: "cuda_v13",
        major: 13,
        cudart: "libcudart.so.13.0.88",
        cudart_version: 13000,
        archs: "750,800,860,870,890,900,1000,1030,1100,1200,1210",
    },
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

    // One libggml-cuda.so per bundled CUDA major version, each in its own dir with its own
    // runtime (as lib/ollama/cuda_v12 and cuda_v13 hold them), linked by link names.
    symlink("../libcuda.so.570.133.07", &out.join("link/libcuda.so"));
    for cuda in CUDA_DIRS {
        let dir = out.join(cuda.dir);
        std::fs::create_dir_all(dir.join("link")).unwrap();
        let [so, name] = shared(&format!("libcudart.so.{}", cuda.major));
        let runtime = format!("{}/{}", cuda.dir, cuda.cudart);
        let version = format!("-DCUDART_VERSION={}", cuda.cudart_version);
        cc.build("cudart.c", &runtime, &[&so, &name, &version]);
        symlink(
            &format!("../{}", cuda.cudart),
            &dir.join("link/libcudart.so"),
        );
        let [so, name] = shared("libggml-cuda.so");
        let archs = format!("-DLAB_CUDA_ARCHS=\"{}\"", cuda.archs);
        let runtime_dir = format!("-L{}", dir.join("link").display());
        cc.build(
            "ggml-cuda.c",
            &format!("{}/libggml-cuda.so", cuda.dir),
            &[
                &so,
                &name,
                &archs,
                origin,
                needed,
                &runtime_dir,
                "-lggml-base",
                "-lcudart",
                "-lcuda",
            ],
        );
    }

    let [so, name] = shared("libggml-vulkan.so");
    std::fs::create_dir_all(out.join("vulkan")).unwrap();
    cc.build(
        "ggml-vulkan.c",
        "vulkan/libggml-vulkan.so",
        &[&so, &name, origin, needed, "-lggml-base"],
    );

    // MLX's C API as the Docker image ships it: DT_NEEDED libcuda.so.1.
    let [so, name] = shared("libmlxc.so");
    std::fs::create_dir_all(out.join("mlx_cuda_v13")).unwrap();
    cc.build(
        "mlxc.c",
        "mlx_cuda_v13/libmlxc.so",
        &[&so, &name, origin, needed, "-lcuda"],
    );

    cc.build(
        "llama-server.c",
        "llama-server",
        &[origin, needed, "-lggml", "-lggml-base"],
    );
}
