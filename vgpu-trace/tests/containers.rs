//! A real container (podman with runc, on a Debian root filesystem made by debootstrap: `cargo
//! xtask test` prepares both), running the lab's Ollama stand-in and the shims inside it,
//! traced from the host: the container's own C library is probed, its processes carry the
//! container's id, and paths are the container's.
use std::path::PathBuf;
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

fn ollama_in_a_container_is_traced_from_the_host(how: How) {
    let _serial = serial();
    let rootfs = rootfs();
    let scratch = temp_dir("container");
    let conf = scratch.path().join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    // The host's build tree, at the same path inside: the lab finds its pieces there.
    let lab = fixture("vgpu-lab");
    let target = lab.parent().unwrap().parent().unwrap().to_path_buf();
    let name = format!("vgpu-trace-test-{}", std::process::id());
    let go = format!("/tmp/{name}.go");
    let wait_then_run = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; exec {} run healthy --era b",
        lab.display()
    );
    let entrypoint: Vec<String> = match how {
        How::Cgroup => vec!["sh".into(), "-c".into(), wait_then_run],
        How::Name => vec![
            "bash".into(),
            "-c".into(),
            format!("exec -a ollama bash -c '{wait_then_run}'"),
        ],
    };
    let started = podman(&conf)
        .args(["run", "-d", "--name", &name, "--network", "none", "-v"])
        .arg(format!("{0}:{0}:ro", target.display()))
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
    let file = temp_file("container");
    let target: Vec<&str> = match how {
        How::Cgroup => vec!["--cgroup", &cgroup],
        How::Name => vec!["ollama"],
    };
    let mut tracer = tracer()
        .arg("attach")
        .args(&target)
        .args(["--format", "jsonl", "-o"])
        .arg(&*file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (said, _stderr) = until_armed(&mut tracer);
    if let How::Name = how {
        assert!(
            said.contains(&format!("runs in container {short}")),
            "{said}"
        );
    }
    // The container's /tmp is the root filesystem's.
    std::fs::write(rootfs.join(go.trim_start_matches('/')), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while podman(&conf)
        .args(["inspect", "--format", "{{.State.Running}}", &name])
        .output()
        .unwrap()
        .stdout
        .starts_with(b"true")
    {
        assert!(Instant::now() < deadline, "the container did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(rootfs.join(go.trim_start_matches('/')));
    // Attached by name, the tracer ends with the processes it follows; by cgroup, when told.
    if let How::Cgroup = how {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(tracer.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
    }
    assert!(wait_timeout(&mut tracer, Duration::from_secs(30)).success());
    drop(cleanup);
    let trace = Trace::read(&file);
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

/// Removes the container however the test ends.
struct Cleanup(Command, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.args(["rm", "-f", &self.1]).output();
    }
}
