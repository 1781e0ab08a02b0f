//! Starting the command of `run` so that nothing it does escapes the probes: the child is
//! forked, waits on a pipe while the tracer follows its pid, and only then execs.
use std::{
    ffi::CString,
    os::fd::{AsFd, OwnedFd},
};

use anyhow::{Context as _, bail};
use nix::{
    fcntl::OFlag,
    unistd::{ForkResult, Pid, execvp, fork, pipe2, read, write},
};

pub struct Launched {
    pub pid: Pid,
    go: OwnedFd,
    exec_error: OwnedFd,
    program: String,
}

/// Forks the child, which blocks until [`Launched::release`], then installs `seccomp` (if
/// given; the command runs without it if it cannot) and execs.
pub fn prepare(cmd: &[String], seccomp: Option<&libc::sock_fprog>) -> anyhow::Result<Launched> {
    let Some(program) = cmd.first() else {
        bail!("no command given to run");
    };
    let args: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("the command line contains a NUL byte")?;
    let (go_rx, go_tx) = pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;
    let (err_rx, err_tx) = pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;
    // SAFETY: the child only calls async-signal-safe functions (read, execvp, write, _exit)
    // on data prepared before the fork.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            drop(go_tx);
            drop(err_rx);
            let mut byte = [0u8; 1];
            if !matches!(read(go_rx.as_fd(), &mut byte), Ok(1)) {
                // The tracer went away before arming: do not run untraced.
                unsafe { libc::_exit(126) };
            }
            if let Some(prog) = seccomp {
                crate::backend::ptrace::seccomp::install(prog);
            }
            let errno = execvp(&args[0], &args).unwrap_err();
            let _ = write(&err_tx, &(errno as i32).to_ne_bytes());
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => Ok(Launched {
            pid: child,
            go: go_tx,
            exec_error: err_rx,
            program: program.clone(),
        }),
    }
}

impl Launched {
    /// Lets the child exec; fails, as bad input, if the exec failed (e.g. command not found).
    pub fn release(self) -> anyhow::Result<()> {
        write(&self.go, &[1]).context("starting the command")?;
        drop(self.go);
        let mut errno = [0u8; 4];
        match read(self.exec_error.as_fd(), &mut errno) {
            Ok(4) => {
                let err = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
                let err = anyhow::anyhow!("cannot run {:?}: {err}", self.program);
                Err(crate::failure::Failure::Usage.mark(err))
            }
            _ => Ok(()),
        }
    }
}
