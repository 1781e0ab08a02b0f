//! Starting discovery children the way Ollama's Go code does: a port from `localhost:0`,
//! the parent's environment plus library paths, output dropped unless OLLAMA_DEBUG is at trace
//! level, SIGKILL once they have answered or run out of time.
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

pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs to completion like Go's `CombinedOutput` under a context deadline.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", command_line(cmd)))?;
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
