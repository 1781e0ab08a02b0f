//! Starting discovery children the way Ollama's Go code does: a port from `localhost:0`,
//! the parent's environment plus library paths, output dropped unless OLLAMA_DEBUG is at trace
//! level, SIGKILL once they have answered or run out of time; before the first, Go's pidfd check.
use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Listen on localhost:0, read the port, close (llm/server.go).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(49152, |a| a.port())
}

/// Children's output is shown only with OLLAMA_DEBUG=2 (trace).
pub fn trace_output() -> bool {
    std::env::var("OLLAMA_DEBUG").is_ok_and(|v| v.parse::<i32>().is_ok_and(|n| n >= 2))
}

/// `dirs` in front of the inherited LD_LIBRARY_PATH, duplicates removed.
pub fn library_path(dirs: &[String]) -> String {
    let inherited = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let mut out: Vec<&str> = Vec::new();
    for d in dirs.iter().map(String::as_str).chain(inherited.split(':')) {
        if !d.is_empty() && !out.contains(&d) {
            out.push(d);
        }
    }
    out.join(":")
}

pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Go's os/exec on the first start in a process (Go 1.23+, `syscall.checkClonePidfd`): a child
/// cloned with CLONE_PIDFD that exits 0 at once, to learn whether pidfds work. Real Ollama's
/// serve shows it as its first child, a fork without exec; the lab's serve does the same once.
fn go_pidfd_check() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut pidfd: libc::c_int = -1;
        let flags = (libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: clone without CLONE_VM gives the child its own copy of memory; the child
        // does nothing but _exit, and the parent reaps it and closes the pidfd.
        unsafe {
            let pid = libc::syscall(
                libc::SYS_clone,
                flags,
                0usize,
                &mut pidfd as *mut libc::c_int,
                0usize,
                0usize,
            );
            if pid == 0 {
                libc::_exit(0);
            }
            if pid > 0 {
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
            }
            if pidfd >= 0 {
                libc::close(pidfd);
            }
        }
    });
}

/// `exec.Cmd.Start`: the first one in the process checks pidfd support first.
pub fn start(cmd: &mut Command) -> std::io::Result<Child> {
    go_pidfd_check();
    cmd.spawn()
}

pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs to completion like Go's `CombinedOutput` under a context deadline.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = start(cmd).map_err(|e| format!("{}: {e}", command_line(cmd)))?;
    let mut readers = Vec::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        readers.push(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut pipe = pipe;
            let _ = pipe.read_to_end(&mut buf);
            buf
        }));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                kill(&mut child);
                return Err("context deadline exceeded".into());
            }
        }
    };
    let mut bufs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout: bufs.next().unwrap_or_default(),
        stderr: bufs.next().unwrap_or_default(),
    })
}
