//! A real container (podman with runc, on a Debian root filesystem made by debootstrap: `cargo
//! xtask test` prepares both), running the lab's Ollama stand-in and the shims inside it,
//! traced from the host: the container's own C library is probed, its processes carry the
//! container's id, and paths are the container's.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

fn rootfs() -> PathBuf {
    PathBuf::from(std::env::var_os("VGPU_TEST_ROOTFS").expect(
        "VGPU_TEST_ROOTFS: the container root filesystem; run through `cargo xtask test`, which makes it",
    ))
}

fn podman(conf: &std::path::Path) -> Command {
    let mut c = Command::new("podman");
    // runc: crun refuses hybrid cgroup set-ups. The default ulimits are above what these
    // machines let even root set.
    c.env("CONTAINERS_CONF", conf)
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

/// How the host attaches to the running container.
enum How {
    /// `attach --cgroup` of the container's scope.
    Cgroup,
    /// `attach ollama`: the container's entrypoint is a wrapper named `ollama` (argv[0]) that
    /// waits, then starts the lab's Ollama.
    Name,
}

/// `attach --cgroup` of a running container from the host: Ollama's discovery inside it,
/// started after the tracer is armed, is followed from the first exec, through the container's
/// own libc, to the shim inside it.
#[test]
#[ignore = "needs root, podman and a root filesystem (cargo xtask test runs it)"]
fn ollama_in_a_container_is_traced_from_the_host_by_cgroup() {
    ollama_in_a_container_is_traced_from_the_host(How::Cgroup);
}

/// The same, `attach ollama` by name: the host finds the container's process, and says that
/// it runs in a container.
#[test]
#[ignore = "needs root, podman and a root filesystem (cargo xtask test runs it)"]
fn ollama_in_a_container_is_traced_from_the_host_by_name() {
    ollama_in_a_container_is_traced_from_the_host(How::Name);
}

/// A container on `rootfs` with host dirs mounted read-only at their own paths, whose
/// entrypoint waits for a file to appear in its /tmp (so that the tracer is armed first), then
/// runs a command.
struct Container {
    conf: PathBuf,
    name: String,
    rootfs: PathBuf,
    gate: String,
    /// Its cgroup (v2 path) and short id.
    cgroup: String,
    short: String,
    _cleanup: Cleanup,
    _scratch: tempfile::TempDir,
}

impl Container {
    /// `command` runs under `sh -c`, or, `as_ollama`, a bash that calls itself `ollama`.
    fn start(rootfs: PathBuf, mounts: &[&std::path::Path], command: &str, as_ollama: bool) -> Self {
        Self::start_with(rootfs, mounts, &[], command, as_ollama)
    }

    /// `start`, with more of `podman run`'s options (`-v`, `-e`).
    fn start_with(
        rootfs: PathBuf,
        mounts: &[&std::path::Path],
        options: &[String],
        command: &str,
        as_ollama: bool,
    ) -> Self {
        let scratch = temp_dir("container");
        let conf = scratch.path().join("containers.conf");
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
        let name = format!(
            "vgpu-trace-test-{}-{}",
            std::process::id(),
            scratch.path().file_name().unwrap().to_string_lossy()
        );
        let gate = format!("/tmp/{name}.go");
        let wait_then_run = format!("while [ ! -e {gate} ]; do sleep 0.05; done; exec {command}");
        let entrypoint: Vec<String> = if as_ollama {
            vec![
                "bash".into(),
                "-c".into(),
                format!("exec -a ollama bash -c '{wait_then_run}'"),
            ]
        } else {
            vec!["sh".into(), "-c".into(), wait_then_run]
        };
        let mut run = podman(&conf);
        run.args(["run", "-d", "--name", &name, "--network", "none"]);
        for dir in mounts {
            run.arg("-v").arg(format!("{0}:{0}:ro", dir.display()));
        }
        run.args(options);
        let started = run
            .arg("--rootfs")
            .arg(&rootfs)
            .args(&entrypoint)
            .output()
            .unwrap();
        assert!(started.status.success(), "{started:?}");
        let cleanup = Cleanup(podman(&conf), name.clone());
        let pid = String::from_utf8(
            podman(&conf)
                .args(["inspect", "--format", "{{.State.Pid}}", &name])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let cgroup_text = std::fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
        let cgroup = cgroup_text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 cgroup")
            .to_string();
        let short = cgroup.rsplit("libpod-").next().unwrap()[..12].to_string();
        Self {
            conf,
            name,
            rootfs,
            gate,
            cgroup,
            short,
            _cleanup: cleanup,
            _scratch: scratch,
        }
    }

    /// Lets the command run, and waits until the container has finished.
    fn run_to_the_end(&self) {
        // The container's /tmp is the root filesystem's.
        let gate = self.rootfs.join(self.gate.trim_start_matches('/'));
        std::fs::write(&gate, "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while podman(&self.conf)
            .args(["inspect", "--format", "{{.State.Running}}", &self.name])
            .output()
            .unwrap()
            .stdout
            .starts_with(b"true")
        {
            assert!(Instant::now() < deadline, "the container did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(gate);
    }
}

/// `attach --cgroup` of `container` with `extra` flags: armed before it runs, stopped once it
/// has finished.
fn trace_by_cgroup(container: &Container, extra: &[&str]) -> Trace {
    let file = temp_file("container");
    let mut tracer = tracer()
        .args(["attach", "--cgroup", &container.cgroup])
        .args(extra)
        .args(["--format", "jsonl", "-o"])
        .arg(&*file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _stderr = until_armed(&mut tracer);
    container.run_to_the_end();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
    Trace::read(&file)
}

fn ollama_in_a_container_is_traced_from_the_host(how: How) {
    let _serial = serial();
    // The host's build tree, at the same path inside: the lab finds its pieces there.
    let lab = fixture("vgpu-lab");
    let target = lab.parent().unwrap().parent().unwrap().to_path_buf();
    let container = Container::start(
        rootfs(),
        &[&target],
        &format!("{} run healthy --era b", lab.display()),
        matches!(how, How::Name),
    );
    let short = container.short.clone();
    let trace = match how {
        How::Cgroup => trace_by_cgroup(&container, &[]),
        How::Name => {
            let file = temp_file("container");
            let mut tracer = tracer()
                .args(["attach", "ollama", "--format", "jsonl", "-o"])
                .arg(&*file)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let (said, _stderr) = until_armed(&mut tracer);
            assert!(
                said.contains(&format!("runs in container {short}")),
                "{said}"
            );
            container.run_to_the_end();
            // Attached by name, the tracer ends with the processes it follows.
            assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
            Trace::read(&file)
        }
    };
    drop(container);
    let runners: Vec<&Value> = trace
        .of_type("exec")
        .filter(|e| e["argv"][1] == "runner")
        .collect();
    assert!(!runners.is_empty(), "no runner seen");
    for runner in &runners {
        assert_eq!(runner["container"], short, "{runner}");
    }
    // The container's waiting shell, there before tracing began (a `sleep` of its loop may
    // be gone before /proc is read: nothing to say of it).
    let attached: Vec<&Value> = trace
        .of_type("attached")
        .filter(|a| a["argv"].as_array().is_some_and(|v| !v.is_empty()))
        .collect();
    assert!(!attached.is_empty());
    for a in attached {
        assert_eq!(a["container"], short, "{a}");
    }
    let pid = &runners.last().unwrap()["pid"];
    // Through the container's libc: its dlopen calls are seen.
    assert!(
        trace
            .of_type("call")
            .any(|c| c["pid"] == *pid && c["func"] == "dlopen" && c["ok"] == true),
        "no dlopen seen from the runner"
    );
    let cuda = trace
        .of_type("load")
        .find(|l| l["pid"] == *pid && l["name"] == "libcuda.so.1")
        .expect("the runner's libcuda.so.1");
    // The path as the container sees it.
    let path = cuda["path"].as_str().unwrap();
    assert!(
        path.starts_with("/tmp/vgpu-lab-healthy-") && path.ends_with("/opt/vgpu/lib/libcuda.so.1"),
        "{path}"
    );
    assert_eq!(cuda["class"], "shim");
    assert_eq!(trace.summary()["verdict"]["outcome"], "shim-used");
    trace.assert_nothing_lost();
}

/// The real Ollama in a container whose image has the CUDA shim where NVIDIA's container
/// toolkit puts the driver, /usr/lib/x86_64-linux-gnu/libcuda.so.1; attached to by name from
/// the host until Ollama concludes. The waiting shell is the container's `ollama` until the
/// tracer is armed, then becomes the real serve (discovery runs once, at its start).
#[test]
#[ignore = "needs root, podman, a root filesystem and the real Ollama (cargo xtask test runs it)"]
fn real_ollama_in_a_container_with_the_shim_in_usr_lib() {
    use common::ollama::*;
    let Some(ollama) = RealOllama::find("real_ollama_in_a_container_with_the_shim_in_usr_lib")
    else {
        return;
    };
    let _serial = serial();
    let serve = Serve::new();
    let scratch = serve.dir.path();
    let log = scratch.join("serve.log");
    std::fs::write(&log, "").unwrap();
    let libs = Path::new("/usr/lib/x86_64-linux-gnu");
    let mut options = vec!["-v".to_string(), format!("{0}:{0}", scratch.display())];
    for (built, soname) in [
        ("libvgpu_cuda.so", "libcuda.so.1"),
        ("libvgpu_nvml.so", "libnvidia-ml.so.1"),
    ] {
        let file = fixture(built);
        options.push("-v".into());
        options.push(format!(
            "{}:{}:ro",
            file.display(),
            libs.join(soname).display()
        ));
    }
    for (key, value) in serve.env() {
        options.push("-e".into());
        options.push(format!("{key}={}", value.to_string_lossy()));
    }
    let container = Container::start_with(
        rootfs(),
        &[&ollama.root],
        &options,
        &format!("{} serve 2>>{}", ollama.ollama().display(), log.display()),
        true,
    );
    let gate = container
        .rootfs
        .join(container.gate.trim_start_matches('/'));
    let (said, trace) = attach_until_concluded(&log, || std::fs::write(&gate, "").unwrap());
    assert!(
        said.contains(&format!("runs in container {}", container.short)),
        "{said}"
    );
    let _ = std::fs::remove_file(&gate);
    let short = container.short.clone();
    drop(container);
    assert_real_discovery(&trace, &ollama);
    for load in driver_loads(&trace) {
        assert_eq!(load["path"], "/lib/x86_64-linux-gnu/libcuda.so.1", "{load}");
    }
    for exec in trace.of_type("exec") {
        assert_eq!(exec["container"], short, "{exec}");
    }
    // Debian's /lib is a link to usr/lib, and ld.so's default dirs name /lib first: the
    // path it opens, and the one the trace gives.
    assert_shim_refused_by_cudart(
        &trace,
        Path::new("/lib/x86_64-linux-gnu"),
        "verdict: init-failed: ",
    );
    trace.assert_nothing_lost();
}

/// glibc 2.31 (Debian 11), which keeps dlopen in libdl.so.2, in a container: the same program
/// built against it gives the same `dl*` events and verdict as on the host's glibc 2.36.
#[test]
#[ignore = "needs root, podman and a root filesystem (cargo xtask test runs it)"]
fn glibc_2_31_in_a_container_gives_the_events_and_verdict_of_the_host() {
    let _serial = serial();
    let bullseye = PathBuf::from(std::env::var_os("VGPU_TEST_ROOTFS_BULLSEYE").expect(
        "VGPU_TEST_ROOTFS_BULLSEYE: a Debian 11 root filesystem with libc6-dev; run through \
         `cargo xtask test`, which makes it",
    ));
    // On the host.
    let host_dir = temp_dir("libc-host");
    let (program, shim) = build_dl_libc(host_dir.path(), &["cc"], None);
    let mut cmd = vec![program.display().to_string(), shim.display().to_string()];
    let (trace, out) = run_traced("libc-host", &[], &mut cmd);
    assert!(out.status.success(), "{out:?}");
    let host = libc_shape(&trace);
    assert_eq!(host.2, "shim-used", "{host:?}");
    // In the container, built there by its own compiler, against its own C library; the
    // container sees the build dir at /tmp/NAME.
    let dir = tempfile::Builder::new()
        .prefix("vgpu-trace-libc-")
        .tempdir_in(bullseye.join("tmp"))
        .unwrap();
    build_dl_libc(dir.path(), &["gcc"], Some(&bullseye));
    let inside = Path::new("/tmp").join(dir.path().file_name().unwrap());
    let container = Container::start(
        bullseye,
        &[],
        &format!(
            "{} {}",
            inside.join("dl-libc").display(),
            inside.join("libcuda.so.1").display()
        ),
        false,
    );
    let trace = trace_by_cgroup(&container, &[]);
    drop(container);
    trace.assert_nothing_lost();
    // Its dl* functions are in the container's libdl.so.2, probed when the program loaded it.
    assert!(
        trace.of_type("load").any(|l| l["name"] == "libdl.so.2"),
        "libdl.so.2 never loaded"
    );
    assert_eq!(libc_shape(&trace), host);
}

/// Removes the container however the test ends.
struct Cleanup(Command, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.args(["rm", "-f", &self.1]).output();
    }
}
