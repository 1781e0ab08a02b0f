use super::*;
use crate::model::{ApiCall, Call, EventKind, ExitStatus, Func, Load};

/// A timeline written as the discovery steps it stands for.
#[derive(Default)]
struct Run {
    events: Vec<TraceEvent>,
    pid: u32,
}

impl Run {
    fn push(&mut self, kind: EventKind) -> &mut Self {
        let ts_ns = self.events.len() as u64 + 1;
        self.events.push(TraceEvent {
            ts_ns,
            pid: self.pid,
            tid: self.pid,
            comm: "ollama".into(),
            depth: 1,
            kind,
        });
        self
    }

    fn process(&mut self, pid: u32, sub: &str) -> &mut Self {
        self.pid = pid;
        self.push(EventKind::Exec {
            ppid: 1,
            filename: "/usr/local/bin/ollama".into(),
            argv: vec!["/usr/local/bin/ollama".into(), sub.into()],
            argv_more: false,
            env: Vec::new(),
            container: None,
        })
    }

    fn load(&mut self, path: &str, class: Class) -> &mut Self {
        self.load_in(path, class, None)
    }

    /// A load while the dlopen of `during` runs.
    fn load_in(&mut self, path: &str, class: Class, during: Option<&str>) -> &mut Self {
        let mut load = Load::new(path.into(), Vec::new(), during.map(Into::into), 0x1000);
        load.class = Some(class);
        self.push(EventKind::Load(load))
    }

    fn api(&mut self, function: &str, code: i32, result: &str) -> &mut Self {
        self.push(EventKind::Api(ApiCall {
            function: function.into(),
            code,
            result: result.into(),
            values: Default::default(),
            text: None,
        }))
    }

    fn devices(&mut self, count: u64) -> &mut Self {
        self.push(EventKind::Api(ApiCall {
            function: "cuDeviceGetCount".into(),
            code: 0,
            result: "CUDA_SUCCESS".into(),
            values: [("count".to_string(), count)].into(),
            text: None,
        }))
    }

    fn dlopen_fails(&mut self, name: &str, error: &str) -> &mut Self {
        self.push(EventKind::Call(Call {
            name: Some(name.into()),
            ok: Some(false),
            ret: Some(0),
            error: Some(error.into()),
            ..Call::new(Func::Dlopen)
        }))
    }

    fn killed(&mut self) -> &mut Self {
        self.push(EventKind::Exit(ExitStatus {
            signal: Some(9),
            ..ExitStatus::default()
        }))
    }

    fn verdict(&self) -> Verdict {
        judge(&self.events)
    }
}

const SHIM: &str = "/opt/vgpu/lib/libcuda.so.1";
const NVIDIA: &str = "/usr/local/nvidia/lib64/libcuda.so.1";

fn healthy_runner(run: &mut Run, pid: u32) {
    run.process(pid, "runner")
        .load(
            "/usr/lib/ollama/cuda_v12/libggml-cuda.so",
            Class::OllamaBundled,
        )
        .load(SHIM, Class::Shim)
        .api("cuInit", 0, "CUDA_SUCCESS")
        .devices(1)
        .load("/opt/vgpu/lib/libnvidia-ml.so.1", Class::Shim)
        .api("nvmlInit_v2", 0, "NVML_SUCCESS");
}

#[test]
fn nothing_about_cuda_is_no_cuda() {
    let v = Run::default().verdict();
    assert_eq!((v.outcome, v.pid), (Outcome::NoCuda, None));
    let mut run = Run::default();
    run.process(5, "serve")
        .load("/lib/x86_64-linux-gnu/libm.so.6", Class::System);
    assert_eq!(run.verdict().outcome, Outcome::NoCuda);
}

#[test]
fn a_runner_on_the_shim_uses_it() {
    let mut run = Run::default();
    healthy_runner(&mut run, 10);
    healthy_runner(&mut run, 11);
    let v = run.verdict();
    assert_eq!((v.outcome, v.pid), (Outcome::ShimUsed, Some(11)), "{v}");
    assert_eq!(
        v.text,
        "pid 11 (ollama runner) loaded the shim /opt/vgpu/lib/libcuda.so.1; cuInit = CUDA_SUCCESS, 1 device; NVML shim initialised"
    );
    assert!(v.outcome.shim_used());
}

#[test]
fn walking_candidates_the_last_one_counts() {
    // Era A: NVIDIA's driver first (no GPU), then the shim, in one process.
    let mut run = Run::default();
    run.process(7, "serve")
        .load(NVIDIA, Class::NvidiaDriver)
        .api("cuInit", 100, "CUDA_ERROR_NO_DEVICE")
        .load("/opt/vgpu/lib/libvgpu-cuda.so", Class::Shim)
        .api("cuInit", 0, "CUDA_SUCCESS");
    assert_eq!(run.verdict().outcome, Outcome::ShimUsed);
}

#[test]
fn a_shim_forwarding_to_the_driver_is_still_the_shim() {
    let mut run = Run::default();
    run.process(7, "runner")
        .load(SHIM, Class::Shim)
        .load(NVIDIA, Class::NvidiaDriver)
        .api("cuInit", 0, "CUDA_SUCCESS");
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::ShimUsed);
    assert!(
        v.text
            .contains("(forwarding to /usr/local/nvidia/lib64/libcuda.so.1)"),
        "{v}"
    );
}

#[test]
fn a_retry_replaces_a_failure_but_another_role_failing_decides() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuInit", 100, "CUDA_ERROR_NO_DEVICE");
    healthy_runner(&mut run, 11);
    assert_eq!(run.verdict().outcome, Outcome::ShimUsed);

    // Era C: the device listing failed; Ollama's own probe succeeding does not undo that.
    let mut run = Run::default();
    run.process(20, "--list-devices")
        .load(NVIDIA, Class::NvidiaDriver)
        .api("cuInit", 100, "CUDA_ERROR_NO_DEVICE");
    healthy_runner(&mut run, 21);
    let v = run.verdict();
    assert_eq!((v.outcome, v.pid), (Outcome::NvidiaDriver, Some(20)), "{v}");
    assert!(v.text.contains("loaded NVIDIA's driver /usr/local/nvidia/lib64/libcuda.so.1, not a shim; cuInit = CUDA_ERROR_NO_DEVICE (100)"), "{v}");
}

#[test]
fn an_unbindable_shim_is_missing_symbols() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .dlopen_fails(
            "/usr/lib/ollama/cuda_v12/libggml-cuda.so",
            "/usr/lib/ollama/cuda_v12/libggml-cuda.so: undefined symbol: cuMemUnmap",
        );
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::MissingSymbols);
    assert!(v.text.contains("dlopen(libggml-cuda.so) failed: undefined symbol cuMemUnmap, which the CUDA driver it loaded, /opt/vgpu/lib/libcuda.so.1 [shim], does not export"), "{v}");

    // Not a driver symbol: no blame on the driver.
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .dlopen_fails(
            "libggml-cuda.so",
            "libggml-cuda.so: undefined symbol: cublasLtCreate",
        );
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::MissingSymbols);
    assert!(!v.text.contains("does not export"), "{v}");
}

#[test]
fn no_driver_is_not_found_with_the_reason() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(
            "/usr/lib/ollama/cuda_v12/libcudart.so.12",
            Class::OllamaBundled,
        )
        .dlopen_fails("/usr/lib/wsl/lib/libnvidia-ml.so.1", "")
        .dlopen_fails(
            "/usr/lib/ollama/cuda_v12/libggml-cuda.so",
            "libcuda.so.1: cannot open shared object file: No such file or directory",
        )
        .killed();
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::NotFound);
    assert_eq!(
        v.text,
        "pid 10 (ollama runner): dlopen(libggml-cuda.so) failed: libcuda.so.1: cannot open shared object file: No such file or directory"
    );

    let mut run = Run::default();
    run.process(3, "serve")
        .load("/usr/lib/ollama/libcudart.so.12.8.90", Class::OllamaBundled);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::NotFound);
    assert!(
        v.text
            .starts_with("no CUDA driver library (libcuda.so*) was loaded"),
        "{v}"
    );
}

#[test]
fn a_shim_that_fails_or_hangs_says_where() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuGetProcAddress_v2", 500, "CUDA_ERROR_NOT_FOUND")
        .api("cuGetExportTable", 500, "CUDA_ERROR_NOT_FOUND");
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::InitFailed, "{v}");
    assert!(
        v.text
            .ends_with("but cuGetExportTable = CUDA_ERROR_NOT_FOUND (500)"),
        "{v}"
    );

    let mut run = Run::default();
    run.process(10, "runner").load(SHIM, Class::Shim).killed();
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::Unfinished);
    assert!(
        v.text
            .ends_with("was killed by SIGKILL before cuInit returned"),
        "{v}"
    );

    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuInit", 0, "CUDA_SUCCESS")
        .devices(0);
    assert_eq!(run.verdict().outcome, Outcome::NoDevices);
}

#[test]
fn nvml_failing_is_named_after_cuda_worked() {
    let mut run = Run::default();
    healthy_runner(&mut run, 10);
    run.api("nvmlInit_v2", 9, "NVML_ERROR_DRIVER_NOT_LOADED");
    assert_eq!(run.verdict().outcome, Outcome::NvmlFailed);
    let mut run2 = Run::default();
    run2.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuInit", 0, "CUDA_SUCCESS")
        .load("/opt/vgpu/lib/libnvidia-ml.so.1", Class::Shim)
        .api("nvmlInit_v2", 9, "NVML_ERROR_DRIVER_NOT_LOADED");
    let v = run2.verdict();
    assert_eq!(v.outcome, Outcome::NvmlFailed);
    assert!(v.outcome.shim_used());
    assert!(v.text.ends_with("but NVML failed in pid 10 (ollama runner): nvmlInit_v2 = NVML_ERROR_DRIVER_NOT_LOADED (9) on /opt/vgpu/lib/libnvidia-ml.so.1 [shim]"), "{v}");
}

#[test]
fn other_drivers_are_named_by_class() {
    for (path, class, outcome) in [
        (
            "/x/libcuda.so.1",
            Class::OllamaBundled,
            Outcome::BundledCopy,
        ),
        ("/x/libcuda.so.1", Class::CudaToolkit, Outcome::BundledCopy),
        (
            "/usr/lib/ollama/cuda_v12/libcuda.so.1",
            Class::NvidiaDriver,
            Outcome::BundledCopy,
        ),
        ("/x/libcuda.so.1", Class::Other, Outcome::OtherDriver),
    ] {
        let mut run = Run::default();
        run.process(10, "runner")
            .load(path, class)
            .api("cuInit", 0, "CUDA_SUCCESS");
        assert_eq!(run.verdict().outcome, outcome, "{class:?}");
    }
}

#[test]
fn outcome_names_round_trip() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::parse(o.name()), Some(o));
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, format!("\"{}\"", o.name()));
    }
    assert_eq!(Outcome::parse("shim_used"), None);
}

impl Run {
    /// A line of Ollama's log, written by `ollama serve` (pid 1).
    fn ollama_says(&mut self, line: &str) -> &mut Self {
        let pid = std::mem::replace(&mut self.pid, 1);
        self.push(EventKind::Log(crate::judge::ollama_log::log_line(
            crate::model::Stream::Stderr,
            line.as_bytes(),
            false,
        )));
        self.pid = pid;
        self
    }
}

const GPU_LINE: &str = r#"time=x level=INFO source=types.go:42 msg="inference compute" id=0 library=CUDA compute=9.0 name=CUDA0 description="vGPU H100 80GB" libdirs=ollama,cuda_v12"#;
const CPU_LINE: &str =
    r#"time=x level=INFO source=types.go:60 msg="inference compute" id=cpu library=cpu compute="""#;

#[test]
fn ollama_reporting_the_gpu_agrees_with_the_shim() {
    let mut run = Run::default();
    healthy_runner(&mut run, 10);
    run.ollama_says(GPU_LINE);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::ShimUsed);
    assert!(
        v.text
            .ends_with("; Ollama reports library=CUDA (vGPU H100 80GB, compute 9.0)"),
        "{v}"
    );
}

#[test]
fn ollama_reporting_cpu_after_the_shim_worked_names_what_it_dropped() {
    let mut run = Run::default();
    run.ollama_says(r#"time=x level=INFO source=runner.go:55 msg="discovering available GPUs...""#);
    healthy_runner(&mut run, 10);
    run.ollama_says(r#"time=x level=INFO source=cuda_compat.go:61 msg="skipping CUDA device — compute capability not in compiled architectures" device=CUDA0 compute=3.5"#)
        .ollama_says(CPU_LINE);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::OllamaFiltered);
    assert!(!v.outcome.shim_used());
    assert!(
        v.text.ends_with(
            "; yet Ollama reported library=cpu, having dropped the device: skipping CUDA \
             device — compute capability not in compiled architectures (device=CUDA0 compute=3.5)"
        ),
        "{v}"
    );
    // A later discovery (a refresh at model load) that finds the GPU replaces the earlier.
    run.ollama_says(r#"time=x level=INFO source=runner.go:55 msg="discovering available GPUs...""#)
        .ollama_says(GPU_LINE);
    assert_eq!(run.verdict().outcome, Outcome::ShimUsed);
}

#[test]
fn ollama_reporting_cpu_after_a_failure_keeps_the_failure() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuInit", 100, "CUDA_ERROR_NO_DEVICE");
    run.ollama_says(CPU_LINE);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::InitFailed);
    assert!(v.text.ends_with("; Ollama reported library=cpu"), "{v}");
    // Ollama's own reason, as ggml logged it, is quoted.
    run.ollama_says("ggml_cuda_init: failed to initialize CUDA: named symbol not found");
    let v = run.verdict();
    assert!(
        v.text.ends_with(
            "; Ollama reported library=cpu (its log: ggml_cuda_init: failed to initialize \
             CUDA: named symbol not found)"
        ),
        "{v}"
    );
    let mut quiet = Run::default();
    quiet.ollama_says(CPU_LINE);
    let v = quiet.verdict();
    assert_eq!(v.outcome, Outcome::NoCuda);
    assert!(v.text.ends_with("; Ollama reported library=cpu"), "{v}");
}

impl Run {
    /// An era C/D discovery child working on `lib/ollama/<dir>` (its GGML_BACKEND_PATH).
    fn child_in(&mut self, pid: u32, dir: &str) -> &mut Self {
        self.pid = pid;
        self.push(EventKind::Exec {
            ppid: 1,
            filename: "/usr/lib/ollama/llama-server".into(),
            argv: vec![
                "/usr/lib/ollama/llama-server".into(),
                "--list-devices".into(),
            ],
            argv_more: false,
            env: vec![
                format!("GGML_BACKEND_PATH=/usr/lib/ollama/{dir}/libggml-cuda.so")
                    .as_str()
                    .into(),
            ],
            container: None,
        })
    }

    fn driver_version(&mut self, version: u64) -> &mut Self {
        self.push(EventKind::Api(ApiCall {
            function: "cuDriverGetVersion".into(),
            code: 0,
            result: "CUDA_SUCCESS".into(),
            values: [("version".to_string(), version)].into(),
            text: None,
        }))
    }

    fn exits(&mut self) -> &mut Self {
        self.exits_with(0)
    }

    fn exits_with(&mut self, code: i32) -> &mut Self {
        self.push(EventKind::Exit(ExitStatus {
            code: Some(code),
            ..ExitStatus::default()
        }))
    }
}

/// cuda_v13's runtime refuses a 12.8 driver; cuda_v12 works on the shim.
fn v13_refuses_v12_works(run: &mut Run) {
    run.child_in(20, "cuda_v13")
        .load(
            "/usr/lib/ollama/cuda_v13/libcudart.so.13",
            Class::OllamaBundled,
        )
        .load(SHIM, Class::Shim)
        .driver_version(12080)
        .exits();
    run.child_in(21, "cuda_v12")
        .load(
            "/usr/lib/ollama/cuda_v12/libcudart.so.12",
            Class::OllamaBundled,
        )
        .load(SHIM, Class::Shim)
        .driver_version(12080)
        .api("cuInit", 0, "CUDA_SUCCESS")
        .devices(1)
        .exits();
}

#[test]
fn one_working_library_dir_is_enough_and_the_others_are_named() {
    let mut run = Run::default();
    v13_refuses_v12_works(&mut run);
    let v = run.verdict();
    assert_eq!((v.outcome, v.pid), (Outcome::ShimUsed, Some(21)), "{v}");
    assert!(
        v.text
            .starts_with("pid 21 (ollama, cuda_v12) loaded the shim"),
        "{v}"
    );
    assert!(
        v.text.ends_with(
            "; cuda_v13 failed: pid 20 (ollama, cuda_v13) loaded the shim \
             /opt/vgpu/lib/libcuda.so.1, but libcudart.so.13 needs a CUDA 13.0 driver, and \
             cuDriverGetVersion reports 12.8 (12080)"
        ),
        "{v}"
    );
}

#[test]
fn a_runtime_too_new_for_the_driver_is_an_init_failure_when_no_dir_works() {
    let mut run = Run::default();
    run.child_in(20, "cuda_v13")
        .load(
            "/usr/lib/ollama/cuda_v13/libcudart.so.13.0.88",
            Class::OllamaBundled,
        )
        .load(SHIM, Class::Shim)
        .driver_version(12080)
        .exits();
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::InitFailed, "{v}");
    assert!(v.text.contains("needs a CUDA 13.0 driver"), "{v}");
}

#[test]
fn the_dir_ollama_says_it_kept_decides_between_working_dirs() {
    let mut run = Run::default();
    for (pid, dir) in [(30, "cuda_v12"), (31, "cuda_v13")] {
        run.child_in(pid, dir)
            .load(SHIM, Class::Shim)
            .api("cuInit", 0, "CUDA_SUCCESS")
            .devices(1);
    }
    // Without Ollama's word, the highest-sorting dir, as Ollama chooses.
    assert_eq!(run.verdict().pid, Some(31));
    run.ollama_says(GPU_LINE);
    let v = run.verdict();
    assert_eq!(v.pid, Some(30), "libdirs=ollama,cuda_v12: {v}");
}

#[test]
fn a_driver_only_mapped_by_a_library_takes_no_part_in_discovery() {
    // Era D: serve maps the shim as MLX's DT_NEEDED and never calls it; the children decide.
    let mut run = Run::default();
    run.process(5, "serve")
        .load(
            "/usr/lib/ollama/mlx_cuda_v13/libmlxc.so",
            Class::OllamaBundled,
        )
        .load(SHIM, Class::Shim);
    v13_refuses_v12_works(&mut run);
    assert_eq!(run.verdict().outcome, Outcome::ShimUsed);
    // Alone, the mapping is all there is to say.
    let mut alone = Run::default();
    alone.process(5, "serve").load(SHIM, Class::Shim).exits();
    assert_eq!(alone.verdict().outcome, Outcome::ShimUnused);
}

#[test]
fn a_shim_loaded_and_never_called_is_unused_not_unfinished() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .exits_with(3);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::ShimUnused, "{v}");
    assert_eq!(
        v.text,
        "pid 10 (ollama runner) loaded the shim /opt/vgpu/lib/libcuda.so.1 but never called it; exited 3"
    );
    // A call that returned, though not cuInit: it ended on the way to cuInit.
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .driver_version(12080)
        .exits();
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::Unfinished, "{v}");
    assert!(v.text.ends_with("ended before cuInit returned"), "{v}");
    // Still running: it may yet call it.
    let mut run = Run::default();
    run.process(10, "runner").load(SHIM, Class::Shim);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::Unfinished, "{v}");
    assert!(
        v.text
            .ends_with("was still running when the trace ended before cuInit returned"),
        "{v}"
    );
}

#[test]
fn an_nvml_shim_loaded_and_never_initialised_is_not_called_initialised() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuInit", 0, "CUDA_SUCCESS")
        .devices(1)
        .load("/opt/vgpu/lib/libnvidia-ml.so.1", Class::Shim);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::ShimUsed, "{v}");
    assert!(
        v.text.ends_with(
            "; the NVML shim /opt/vgpu/lib/libnvidia-ml.so.1 was loaded but never initialised"
        ),
        "{v}"
    );
    // Another process that initialised it speaks for NVML.
    healthy_runner(&mut run, 11);
    let v = run.verdict();
    assert!(v.text.ends_with("; NVML shim initialised"), "{v}");
}

#[test]
fn cuda_failing_while_vulkan_finds_the_gpu_is_a_fallback() {
    let mut run = Run::default();
    run.child_in(40, "cuda_v13").dlopen_fails(
        "/usr/lib/ollama/cuda_v13/libggml-cuda.so",
        "/usr/lib/ollama/cuda_v13/libggml-cuda.so: undefined symbol: cuMemUnmap",
    );
    run.ollama_says(r#"time=x level=INFO source=types.go:42 msg="inference compute" id=0 library=Vulkan compute=0.0 name=Vulkan0 description="NVIDIA vGPU (Vulkan)" libdirs=ollama,vulkan"#);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::NotFound, "{v}");
    assert!(
        v.text
            .ends_with("; Ollama fell back to Vulkan: library=Vulkan (NVIDIA vGPU (Vulkan))"),
        "{v}"
    );
}

const TOO_NEW: &str = "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.33' not found \
                       (required by /opt/vgpu/lib/libcuda.so.1)";

#[test]
fn a_shim_whose_dlopen_failed_is_load_failed_with_why() {
    let mut run = Run::default();
    run.process(10, "runner")
        .load_in(SHIM, Class::Shim, Some(SHIM))
        .dlopen_fails(SHIM, TOO_NEW)
        .exits_with(1);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::LoadFailed, "{v}");
    assert_eq!(
        v.text,
        format!(
            "pid 10 (ollama runner): dlopen of the shim {SHIM} failed: {TOO_NEW}; the C library \
             there is older than the shim needs (GLIBC_2.33)"
        )
    );
    // Mapped as a DT_NEEDED of the backend, whose dlopen failed for the shim's sake.
    let ggml = "/usr/lib/ollama/cuda_v12/libggml-cuda.so";
    let mut run = Run::default();
    run.process(10, "runner")
        .load_in(ggml, Class::OllamaBundled, Some(ggml))
        .load_in(SHIM, Class::Shim, Some(ggml))
        .dlopen_fails(ggml, TOO_NEW);
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::LoadFailed, "{v}");
    assert!(
        v.text.contains(&format!(
            "dlopen(libggml-cuda.so), which loaded the shim {SHIM}, failed: "
        )),
        "{v}"
    );
    // The backend wanting a symbol the shim lacks is still a binding failure.
    let mut run = Run::default();
    run.process(10, "runner")
        .load_in(SHIM, Class::Shim, Some(ggml))
        .dlopen_fails(ggml, &format!("{ggml}: undefined symbol: cuMemUnmap"));
    assert_eq!(run.verdict().outcome, Outcome::MissingSymbols);
}

#[test]
fn after_a_shim_failed_to_load_the_next_driver_is_a_new_attempt() {
    // Era A walks candidates: the shim's load fails, NVIDIA's driver is tried next. That is
    // no shim forwarding to it.
    let mut run = Run::default();
    run.process(7, "serve")
        .load_in(SHIM, Class::Shim, Some(SHIM))
        .dlopen_fails(SHIM, TOO_NEW)
        .load_in(NVIDIA, Class::NvidiaDriver, Some(NVIDIA))
        .api("cuInit", 0, "CUDA_SUCCESS");
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::NvidiaDriver, "{v}");
    // A dlopen that succeeded keeps what it mapped: a later failure of the same name is not
    // the shim's load failing.
    let mut run = Run::default();
    run.process(7, "serve")
        .load_in(SHIM, Class::Shim, Some(SHIM))
        .push(EventKind::Call(Call {
            name: Some(SHIM.into()),
            ok: Some(true),
            ret: Some(0x1000),
            path: Some(SHIM.into()),
            ..Call::new(Func::Dlopen)
        }))
        .dlopen_fails(SHIM, TOO_NEW)
        .exits();
    assert_eq!(run.verdict().outcome, Outcome::ShimUnused);
}

#[test]
fn an_nvml_shim_whose_dlopen_failed_is_an_nvml_failure() {
    let nvml = "/opt/vgpu/lib/libnvidia-ml.so.1";
    let mut run = Run::default();
    run.process(10, "runner")
        .load(SHIM, Class::Shim)
        .api("cuInit", 0, "CUDA_SUCCESS")
        .devices(1)
        .load_in(nvml, Class::Shim, Some("libnvidia-ml.so.1"))
        .dlopen_fails(
            "libnvidia-ml.so.1",
            "libfoo.so.2: cannot open shared object file",
        );
    let v = run.verdict();
    assert_eq!(v.outcome, Outcome::NvmlFailed, "{v}");
    assert!(
        v.text.ends_with(&format!(
            "but NVML failed in pid 10 (ollama runner): dlopen(libnvidia-ml.so.1) failed: \
             libfoo.so.2: cannot open shared object file on {nvml} [shim]"
        )),
        "{v}"
    );
}
