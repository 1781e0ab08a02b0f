//! `vgpu-trace watch` as a fleet runs it: following `ollama` by name while the lab's stand-in
//! starts and stops, scraped by a real Prometheus that evaluates the shipped alerting rules.
//! Root and eBPF (a watch never falls back to ptrace).
mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lines, ScratchCgroup, fixture, serial, temp_dir, tracer, until_armed, wait_timeout};
use serde_json::Value;

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on `addr`: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Asks until `ok` holds of the answer, for at most `limit`; fails with the last answer.
fn eventually<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut ask: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let answer = ask();
        if ok(&answer) {
            return answer;
        }
        if start.elapsed() > limit {
            panic!("{what}: not within {limit:?}; last: {answer:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `cmd` (the tracer, or a wrapper that runs it) told `watch TARGETS` into `records` with
/// metrics on `port`, until armed: what it said by then, then the lines of its stdout (one per
/// pass) and of the rest of its stderr.
fn spawn_watch(
    mut cmd: Command,
    targets: &[&str],
    records: &Path,
    port: u16,
) -> (Child, String, Lines, Lines) {
    let mut watch = cmd
        .arg("watch")
        .args(targets)
        .args(["--pass-gap", "2s", "--records"])
        .arg(records)
        .arg("--metrics")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (said, stderr) = until_armed(&mut watch);
    let lines = Lines::of(watch.stdout.take().unwrap());
    (watch, said, lines, Lines::of(stderr))
}

/// `vgpu-trace watch ollama`, as [`spawn_watch`].
fn start_watch(records: &Path, port: u16) -> (Child, Lines, Lines) {
    let (watch, said, lines, stderr) = spawn_watch(tracer(), &["ollama"], records, port);
    assert!(said.contains("any named ollama that starts"), "{said}");
    (watch, lines, stderr)
}

/// The lab's stand-in runs `preset` in era C (v0.30's three children per GPU dir).
fn lab(preset: &str) {
    let out = Command::new(fixture("vgpu-lab"))
        .args(["run", preset, "--era", "c"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vgpu-lab run {preset}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stop(mut watch: Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_timeout(&mut watch, Duration::from_secs(30))
}

/// A Prometheus of its own on loopback: scrapes the watch every second and evaluates the
/// shipped rules every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(bin: &Path, target_port: u16) -> Self {
        let dir = temp_dir("prometheus");
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/alerts.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: vgpu-trace\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(bin.join("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let prometheus = Self {
            child,
            addr,
            _dir: dir,
        };
        eventually(
            "Prometheus ready",
            Duration::from_secs(60),
            || http_get(addr, "/-/ready").map(|(s, _)| s),
            |s| *s == Some(200),
        );
        prometheus
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let Some((200, body)) = http_get(self.addr, &path) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a one-series query, by the label `by`: `{label value: number}`.
    fn by(&self, promql: &str, by: &str) -> std::collections::BTreeMap<String, f64> {
        self.query(promql)
            .iter()
            .map(|r| {
                (
                    r["metric"][by].as_str().unwrap_or_default().to_string(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Firing alerts named `name`, with their labels.
    fn firing(&self, name: &str) -> Vec<Value> {
        let Some((200, body)) = http_get(self.addr, "/api/v1/alerts") else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn prometheus_bin() -> Option<PathBuf> {
    let dir = std::env::var_os("VGPU_TEST_PROMETHEUS").map(PathBuf::from);
    if dir.is_none() {
        vgpu_trace_fixtures::skip_test(
            "watch with Prometheus",
            "VGPU_TEST_PROMETHEUS is not set (cargo xtask test provides Debian's prometheus)",
        );
    }
    dir
}

fn records_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn prometheus_sees_each_pass_and_the_alert_follows_the_shim() {
    let Some(bin) = prometheus_bin() else {
        return;
    };
    let _serial = serial();
    let records = temp_dir("watch-records");
    let port = free_port();
    let (watch, lines, _stderr) = start_watch(records.path(), port);
    let prometheus = Prometheus::start(&bin, port);
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(
        "the watch scraped",
        Duration::from_secs(30),
        || prometheus.by("up{job=\"vgpu-trace\"}", "job"),
        |up| up.get("vgpu-trace") == Some(&1.0),
    );

    lab("healthy");
    let first = lines.until("pass 1 ");
    assert!(
        first.contains("(serve, ") && first.contains("): shim-used: "),
        "{first}"
    );
    lab("shim-missing-symbols");
    let second = lines.until("pass 2 ");
    assert!(second.contains("): missing-symbols: "), "{second}");
    let firing = eventually(
        "VgpuTraceShimNotUsed firing after the bad pass",
        Duration::from_secs(30),
        || prometheus.firing("VgpuTraceShimNotUsed"),
        |a| !a.is_empty(),
    );
    assert_eq!(firing[0]["labels"]["outcome"], "missing-symbols");
    let description = firing[0]["annotations"]["description"].as_str().unwrap();
    assert!(description.contains("vgpu-trace replay"), "{description}");

    lab("healthy");
    let third = lines.until("pass 3 ");
    assert!(third.contains("): shim-used: "), "{third}");
    eventually(
        "VgpuTraceShimNotUsed cleared after the good pass",
        Duration::from_secs(30),
        || prometheus.firing("VgpuTraceShimNotUsed"),
        Vec::is_empty,
    );

    // What Prometheus holds now.
    let passes = eventually(
        "three passes scraped",
        Duration::from_secs(30),
        || prometheus.by("sum by (outcome) (vgpu_trace_passes_total)", "outcome"),
        |p| p.values().sum::<f64>() == 3.0,
    );
    assert_eq!(passes.get("shim-used"), Some(&2.0), "{passes:?}");
    assert_eq!(passes.get("missing-symbols"), Some(&1.0), "{passes:?}");
    let roles = prometheus.by("sum by (role) (vgpu_trace_passes_total)", "role");
    assert_eq!(roles.get("serve"), Some(&3.0), "{roles:?}");
    let last = prometheus.by("vgpu_trace_last_pass_outcome == 1", "outcome");
    assert_eq!(last.keys().collect::<Vec<_>>(), ["shim-used"], "{last:?}");
    let loads = prometheus.by("sum by (class) (vgpu_trace_library_loads_total)", "class");
    for class in ["shim", "ollama-bundled", "system"] {
        assert!(
            loads.get(class).is_some_and(|&n| n > 0.0),
            "{class}: {loads:?}"
        );
    }
    let calls = prometheus.by(
        "sum by (result) (vgpu_trace_api_calls_total{function=\"cuInit\"})",
        "result",
    );
    assert!(
        calls.get("CUDA_SUCCESS").is_some_and(|&n| n > 0.0),
        "{calls:?}"
    );
    assert_eq!(
        prometheus.by("vgpu_trace_backend", "backend").get("ebpf"),
        Some(&1.0)
    );
    assert_eq!(
        prometheus
            .by("vgpu_trace_events_lost_total", "job")
            .get("vgpu-trace"),
        Some(&0.0)
    );
    let rss = prometheus.by("process_resident_memory_bytes", "job");
    assert!(rss.get("vgpu-trace").is_some_and(|&b| b > 0.0), "{rss:?}");

    // No label carries a path, a pid or an argument.
    let (status, text) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    for line in text.lines().filter(|l| l.contains('{')) {
        assert!(!line.contains('/') && !line.contains("vgpu-lab"), "{line}");
    }
    assert_eq!(http_get(metrics, "/other").unwrap().0, 404);
    // The last healthy pass, held back (at most one healthy record a minute), is written as
    // the daemon stops.
    assert!(
        third.ends_with("its record is written within a minute, or at exit"),
        "{third}"
    );
    assert!(stop(watch).success());

    // The bad pass and the last healthy one are kept, whole, and replay as they were judged.
    let kept = records_in(records.path());
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].ends_with("Z-missing-symbols.vgt"), "{kept:?}");
    assert!(kept[1].ends_with("Z-shim-used.vgt"), "{kept:?}");
    let bad = records.path().join(&kept[0]);
    assert!(
        second.ends_with(&format!("→ {}", bad.display())),
        "{second}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&bad).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let replay = Command::new(env!("CARGO_BIN_EXE_vgpu-trace"))
        .args(["replay", "--view", "quiet"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(replay.status.success());
    let verdict = String::from_utf8_lossy(&replay.stdout).replace("\n    ", " ");
    assert!(
        verdict.starts_with("verdict: missing-symbols: "),
        "{verdict}"
    );
    let judged = second
        .split("): ")
        .nth(1)
        .unwrap()
        .split(" → ")
        .next()
        .unwrap();
    assert!(verdict.contains(judged), "{verdict}\nvs\n{judged}");
}

#[test]
fn bad_addresses_and_a_second_daemon_are_refused_with_exit_2() {
    let _serial = serial();
    let records = temp_dir("watch-bad");
    let refused = |args: &[&str]| {
        let out = tracer()
            .arg("watch")
            .arg("--records")
            .arg(records.path())
            .args(args)
            .arg("ollama")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = refused(&["--metrics", "localhost"]);
    assert!(said.contains("is not an address and port"), "{said}");
    let said = refused(&["--metrics", "127.0.0.1:99999"]);
    assert!(said.contains("is not an address and port"), "{said}");
    let said = refused(&["--metrics", "192.0.2.1:9464"]);
    assert!(
        said.contains("cannot serve metrics on 192.0.2.1:9464"),
        "{said}"
    );

    let port = free_port();
    let (first, _lines, _stderr) = start_watch(records.path(), port);
    let said = refused(&["--metrics", &format!("127.0.0.1:{port}")]);
    assert!(
        said.contains("is another `vgpu-trace watch` running there?"),
        "{said}"
    );
    assert!(stop(first).success());
}

/// A tmpfs of `kib` KiB mounted on a new dir, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(kib: u32, read_only: bool) -> Self {
        let dir = temp_dir("tmpfs");
        let mut opts = format!("size={kib}k,mode=0700");
        if read_only {
            opts.push_str(",ro");
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn an_unwritable_records_dir_is_refused_before_tracing() {
    let _serial = serial();
    let port = free_port().to_string();
    let metrics = format!("127.0.0.1:{port}");
    let read_only = Tmpfs::mount(64, true);
    let out = tracer()
        .args(["watch", "ollama", "--metrics", &metrics, "--records"])
        .arg(read_only.0.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot write in the records directory"),
        "{said}"
    );
    assert!(
        !said.contains("armed in"),
        "refused after tracing began: {said}"
    );

    let out = tracer()
        .args([
            "watch",
            "ollama",
            "--metrics",
            &metrics,
            "--records",
            "/proc/version/records",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot create the records directory"),
        "{said}"
    );
}

#[test]
fn a_full_disk_ends_the_watch_with_exit_2_and_keeps_the_records_written() {
    let _serial = serial();
    // Room for the earlier record and the probe, not for a pass of the lab's (~100 KiB).
    let disk = Tmpfs::mount(48, false);
    let earlier = disk.0.path().join("20261201T000000.000Z-init-failed.vgt");
    let text = "{\"type\":\"header\",\"format\":\"vgpu-trace\",\"format_version\":1}\n";
    std::fs::write(&earlier, text).unwrap();
    let filler = disk.0.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", "count=40"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let (mut watch, lines, stderr) = start_watch(disk.0.path(), free_port());
    lab("healthy");
    let status = wait_timeout(&mut watch, Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "the watch went on with a full disk");
    let printed = lines.to_end().unwrap();
    assert!(printed.is_empty(), "{printed:?}");
    let said = stderr.to_end().unwrap().join("\n");
    assert!(
        said.contains("cannot write the record of pass 1 (")
            && said.contains("No space left on device")
            && said.contains("the records already written (1) are intact"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&earlier).unwrap(), text);
    let left: Vec<String> = records_in(disk.0.path());
    assert_eq!(
        left,
        ["20261201T000000.000Z-init-failed.vgt", "filler"],
        "a partial record was left behind"
    );
}

/// Keys of the `FOLLOWED` map that process `pid` (a tracer) holds, read through its map id.
fn followed_in_kernel(pid: u32) -> usize {
    let ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("map_id:")?.trim().parse().ok())
        })
        .collect();
    for id in ids {
        let info = aya::maps::MapInfo::from_id(id).unwrap();
        if info.name_as_str() == Some("FOLLOWED") {
            let map = aya::maps::Map::HashMap(aya::maps::MapData::from_id(id).unwrap());
            let followed: aya::maps::HashMap<_, u32, u32> = map.try_into().unwrap();
            return followed.keys().count();
        }
    }
    panic!("no FOLLOWED map held by pid {pid}");
}

/// A lab tree built once (`vgpu-lab setup`), whose serve is started again and again: one
/// install, restarted, as on a host (a new tree per run would be new library files, each
/// probed anew).
struct LabTree {
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    serve: Vec<String>,
}

impl LabTree {
    fn setup(preset: &str) -> Self {
        let dir = temp_dir("lab-tree");
        let root = dir.path().join("root");
        let out = Command::new(fixture("vgpu-lab"))
            .args(["setup", preset])
            .arg(&root)
            .args(["--era", "c"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let serve = text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap()
            .split(' ')
            .map(str::to_string)
            .collect();
        Self {
            _dir: dir,
            env,
            serve,
        }
    }

    fn serve(&self) {
        self.serve_by(Command::new(&self.serve[0]).args(&self.serve[1..]));
    }

    /// Serve, started by `cmd` (given serve's argv to exec).
    fn serve_by(&self, cmd: &mut Command) {
        let status = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn followers_that_exit_leave_nothing_behind_in_the_kernel_or_the_daemon() {
    let _serial = serial();
    let records = temp_dir("watch-flat");
    let port = free_port();
    let (watch, lines, _stderr) = start_watch(records.path(), port);
    let pid = watch.id();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (healthy, off_path) = (LabTree::setup("healthy"), LabTree::setup("shim-off-path"));
    let mut after_first = None;
    for n in 1..=6 {
        if n % 2 == 0 {
            off_path.serve()
        } else {
            healthy.serve()
        }
        lines.until(&format!("pass {n} "));
        // Every process of the pass has exited: the kernel follows none of them.
        eventually(
            "the kernel's followed set empty",
            Duration::from_secs(10),
            || followed_in_kernel(pid),
            |&n| n == 0,
        );
        // Nor does the daemon.
        eventually(
            "the daemon's followed set empty",
            Duration::from_secs(10),
            || http_get(metrics, "/metrics").unwrap().1,
            |text| text.contains("\nvgpu_trace_followed_processes 0\n"),
        );
        // Each kind of pass once, then none may add an fd or a thread for good (transient
        // ones, a pidfd while holding a process, come and go).
        let now = || {
            (
                count_entries(&format!("/proc/{pid}/fd")),
                count_entries(&format!("/proc/{pid}/task")),
            )
        };
        match after_first {
            None if n == 2 => {
                std::thread::sleep(Duration::from_millis(500));
                after_first = Some(now());
            }
            None => {}
            Some(first) => {
                eventually(
                    &format!("(fds, threads) after pass {n} back to {first:?}"),
                    Duration::from_secs(5),
                    now,
                    |&(fds, threads)| fds <= first.0 && threads <= first.1,
                );
            }
        }
    }
    assert!(stop(watch).success());
}

/// `watch --cgroup` follows a service across restarts: each start of serve in the cgroup (a
/// process no followed one started) is a start-up pass of its own.
#[test]
fn a_watched_cgroup_gives_a_pass_per_restart() {
    let _serial = serial();
    let cgroup = ScratchCgroup::new("watch");
    let records = temp_dir("watch-cgroup");
    let (watch, said, lines, _stderr) = spawn_watch(
        tracer(),
        &["--cgroup", &cgroup.path],
        records.path(),
        free_port(),
    );
    assert!(said.contains("of cgroup"), "{said}");
    let (healthy, off_path) = (LabTree::setup("healthy"), LabTree::setup("shim-off-path"));
    healthy.serve_by(&mut cgroup.start(&healthy.serve.join(" ")));
    let first = lines.until("pass 1 ");
    off_path.serve_by(&mut cgroup.start(&off_path.serve.join(" ")));
    let second = lines.until("pass 2 ");
    assert!(
        first.starts_with("pass 1 (serve, ") && first.contains("): shim-used: "),
        "{first}"
    );
    assert!(
        second.starts_with("pass 2 (serve, ") && second.contains("): not-found: "),
        "{second}"
    );
    // Something outside the cgroup is not watched.
    healthy.serve();
    assert!(stop(watch).success());
    assert!(lines.to_end().unwrap().is_empty());
}

/// The capabilities the shipped unit grants (its `CapabilityBoundingSet=`), in setpriv's
/// spelling: `-all,+bpf,+perfmon,...`.
fn units_capabilities() -> String {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/assets/vgpu-trace-watch.service"),
    )
    .unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities");
    let mut set = "-all".to_string();
    for cap in caps.split_whitespace() {
        set.push_str(",+");
        set.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    set
}

/// As systemd runs it: root bounded to the unit's capabilities, still loads its programs,
/// follows Ollama and judges a pass.
#[test]
fn the_units_capabilities_are_enough_to_watch() {
    let _serial = serial();
    let records = temp_dir("watch-caps");
    let caps = units_capabilities();
    let mut setpriv = Command::new("setpriv");
    setpriv
        .arg(format!("--bounding-set={caps}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vgpu-trace"))
        .env("VGPU_TRACE_BACKEND", "ebpf");
    let (watch, said, lines, _stderr) =
        spawn_watch(setpriv, &["ollama"], records.path(), free_port());
    let status = std::fs::read_to_string(format!("/proc/{}/status", watch.id())).unwrap();
    let bounded = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(bounded, "000001ffffffffff", "not bounded: {said}");
    lab("healthy");
    let pass = lines.until("pass 1 ");
    assert!(pass.contains("): shim-used: "), "{pass}");
    assert!(stop(watch).success());
}

/// Serve's start-up discovery and the refresh at model load (v0.33: discovery again for the
/// runner that loads the model) are two passes: start-up, then a runner's.
#[test]
fn the_refresh_at_model_load_is_a_pass_of_its_own() {
    let _serial = serial();
    let records = temp_dir("watch-load");
    let (watch, lines, _stderr) = start_watch(records.path(), free_port());
    let out = Command::new(fixture("vgpu-lab"))
        .args([
            "run",
            "healthy",
            "--era",
            "d",
            "--layout",
            "tarball",
            "--load-model",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let start_up = lines.until("pass 1 ");
    let load = lines.until("pass 2 ");
    assert!(
        start_up.starts_with("pass 1 (serve, ") && start_up.contains("): shim-used: "),
        "{start_up}"
    );
    assert!(
        load.starts_with("pass 2 (runner, ") && load.contains("): shim-used: "),
        "{load}"
    );
    assert!(stop(watch).success());
}

/// `watch --all`: serve's start-up is told as such even though the family's root is the
/// lab that started it.
#[test]
fn watching_everything_still_tells_serves_start_up() {
    let _serial = serial();
    let records = temp_dir("watch-all");
    let (watch, said, lines, _stderr) =
        spawn_watch(tracer(), &["--all"], records.path(), free_port());
    assert!(said.contains("tracing every process"), "{said}");
    lab("healthy");
    let pass = lines.until("pass ");
    assert!(
        pass.contains(" (serve, ") && pass.contains("): shim-used: "),
        "{pass}"
    );
    assert!(stop(watch).success());
}
