//! The ptrace engine: a process of its own (`vgpu-trace ptrace-engine`, started by the
//! session), so that the tracees outlive the tracer. It starts the command, serves every stop
//! and writes what it sees to the session as [`Message`]s, one JSON line each.
//!
//! When the session goes away (Ctrl-C, SIGKILL, a crash), the engine stops writing and goes
//! on serving: the breakpoints and the seccomp filter it left need a tracer, or the command
//! would die of a trap or see its opens fail. It ends with the last tracee. It ignores the
//! signals a terminal or a `kill` sends the session; only SIGKILL ends it early.
use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use vgpu_trace_common::path::path_kind;
use vgpu_trace_common::{
    EXEC_ARGV_BYTES, EXEC_ENV_BYTES, OUTPUT_BUDGET_PER_S, OUTPUT_MAX, STR_MAX,
};

use super::outbox::Outbox;
use super::probes::{Hit, Probe, Probes};
use super::rendezvous::{Lists, ProcessMemory};
use super::tracee::{self, SyscallStop};
use super::wakeups::Wakeups;
use super::{Job, Message, attach, seccomp};
use crate::event::{RawBody, RawEvent};
use crate::files::FileId;
use crate::procfs::{self, CodeMapping};
use crate::text::Text;

const SYS_WRITE: u64 = 1;
const SYS_OPEN: u64 = 2;
const SYS_MMAP: u64 = 9;
const SYS_OPENAT: u64 = 257;
const PROT_EXEC: u64 = 4;

/// `write()` calls a second past which a process's `write` breakpoint is taken out: about
/// 2.5% of a CPU in stops, at 25 µs each.
const WRITES_PER_S: u64 = 1000;

/// The fd the session hands the engine its messages' pipe on.
pub const MESSAGES_FD: i32 = 3;

/// `vgpu-trace ptrace-engine`: serves `job` until its last traced process ends or is let go.
pub fn serve(job: Job) -> i32 {
    // Named for `ps`: started through /proc/self/exe, it would show as "exe". The command,
    // forked below, takes its own name at exec.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"vgpu-ptrace".as_ptr()) };
    shield_from_signals();
    // SAFETY: MESSAGES_FD is the pipe the session set up for this process, owned here only.
    let out = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(MESSAGES_FD) };
    let mut out = Outbox::new(out);
    let started = match &job {
        Job::Run(cmd) => start(cmd).map(|pid| {
            out.send(&Message::Started {
                pid: pid.as_raw() as u32,
            });
            let tasks = HashMap::from([(pid, pid.as_raw() as u32)]);
            (tasks, Some(pid), seccomp::filtered(pid.as_raw() as u32))
        }),
        Job::Attach(roots) => {
            spare_from_oom();
            let ts_ns = procfs::boottime_ns();
            attach::seize(roots).map(|seized| {
                out.send(&Message::Attached {
                    pids: seized.pids,
                    ts_ns,
                });
                (seized.tids, None, false)
            })
        }
    };
    let (tasks, command, filtered) = match started {
        Ok(started) => started,
        Err(e) => {
            out.send(&Message::Failed {
                message: format!("{e:#}"),
                usage: crate::failure::exit_code(&e) == 2,
            });
            out.drain();
            return 1;
        }
    };
    out.flush();
    if command.is_some() && !filtered {
        out.send(&Message::Warn(
            "no seccomp filter in the command: every system call stops".into(),
        ));
    }
    // Blocked only now: the command, forked above, must not inherit the mask.
    let wakeups = match Wakeups::new() {
        Ok(w) => w,
        Err(e) => {
            out.send(&Message::Warn(format!("cannot sleep between stops: {e}")));
            return 1;
        }
    };
    Engine::new(out, wakeups, tasks, command, filtered).run();
    0
}

/// Ctrl-C, a hang-up or a `kill` meant for the session must not end the engine while it
/// holds tracees. Handlers rather than SIG_IGN: they reset at the command's exec, where an
/// ignored signal would stay ignored. Signals the user ignored (nohup) stay so. The release
/// signal, before it is blocked for [`Wakeups`], is noted.
fn shield_from_signals() {
    extern "C" fn nothing(_: libc::c_int) {}
    extern "C" fn release(_: libc::c_int) {
        super::wakeups::RELEASE_ASKED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    for sig in crate::backend::SESSION_SIGNALS {
        let handler = if sig == super::RELEASE_SIGNAL {
            release as extern "C" fn(libc::c_int) as usize
        } else {
            nothing as extern "C" fn(libc::c_int) as usize
        };
        // SAFETY: a zeroed sigaction is valid; `nothing` is async-signal-safe.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old);
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = handler;
            act.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Asks the OOM killer to pass this process by (needs CAP_SYS_RESOURCE; without it, nothing):
/// its SIGKILL would leave the tracees with breakpoints.
fn spare_from_oom() {
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
}

/// Forks the command, seizes it while it waits, then lets it install the filter and exec.
fn start(cmd: &[String]) -> anyhow::Result<Pid> {
    let filter = seccomp::program();
    let child = crate::backend::launch::prepare(cmd, Some(&filter))?;
    let pid = child.pid;
    let options = Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACESECCOMP;
    ptrace::seize(pid, options).context("PTRACE_SEIZE of the command")?;
    // Forked already, the command does not inherit it; it runs only once released.
    spare_from_oom();
    child.release()?;
    Ok(pid)
}

/// What a thread is in the middle of, between a syscall's entry and exit stops.
enum Pending {
    Open {
        path: Text,
        flags: u32,
    },
    Mmap {
        fd: u32,
        /// The file, as checked at entry.
        id: FileId,
        len: u64,
        prot: u32,
        pgoff: u64,
    },
}

struct Task {
    tgid: u32,
    pending: Option<Pending>,
}

struct Engine {
    out: Outbox,
    wakeups: Wakeups,
    tasks: HashMap<Pid, Task>,
    /// New tasks whose creator's event is not seen yet: they wait, stopped, for the
    /// breakpoints their creator's memory holds to be known.
    orphans: HashSet<Pid>,
    /// Processes attached to whose earlier mappings are not armed yet (at their first stop).
    unscanned: HashSet<u32>,
    /// Library fds by (tgid, fd), from `LibOpen`, with the file each named then (closes are
    /// not stopped for: a reused fd is told by the file it names).
    lib_fds: HashMap<(u32, u32), FileId>,
    probes: Probes,
    /// Per process: its one-second output window's start and the bytes kept in it.
    output_budget: HashMap<u32, (std::time::Instant, u64)>,
    /// `run`'s command; none when attached.
    command: Option<Pid>,
    /// Only the filter's calls stop (PTRACE_CONT); otherwise every call does (PTRACE_SYSCALL).
    filtered: bool,
    /// ld.so's list of objects in each process (`light`).
    lists: Lists,
    /// Per process, the code mappings armed so far (`light`): a change of ld.so's list arms
    /// only what is new.
    armed: HashMap<u32, HashSet<CodeMapping>>,
    /// Per process: its one-second window's start and the `write()` calls stopped in it.
    write_hits: HashMap<u32, (std::time::Instant, u64)>,
    release: Option<Release>,
}

/// Letting go, once asked.
struct Release {
    /// Detach each thread; else (the seccomp filter is in) keep answering its stops alone.
    detach: bool,
    /// Threads not let go yet.
    waiting: HashSet<Pid>,
    let_go: u32,
    told: bool,
}

impl Engine {
    /// An engine for `tasks` (thread → process): `run`'s `command`, or processes attached to,
    /// whose earlier mappings are armed at their first stop.
    fn new(
        out: Outbox,
        wakeups: Wakeups,
        tasks: HashMap<Pid, u32>,
        command: Option<Pid>,
        filtered: bool,
    ) -> Self {
        let unscanned = match command {
            Some(_) => HashSet::new(),
            None => tasks.values().copied().collect(),
        };
        Self {
            out,
            wakeups,
            tasks: tasks
                .into_iter()
                .map(|(tid, tgid)| {
                    (
                        tid,
                        Task {
                            tgid,
                            pending: None,
                        },
                    )
                })
                .collect(),
            orphans: HashSet::new(),
            unscanned,
            lib_fds: HashMap::new(),
            probes: Probes::with_writes(command.is_none()),
            output_budget: HashMap::new(),
            command,
            filtered,
            lists: Lists::default(),
            armed: HashMap::new(),
            write_hits: HashMap::new(),
            release: None,
        }
    }

    /// Serves stops until no traced task is left.
    fn run(mut self) {
        loop {
            if self.release.is_none() && self.wakeups.release_asked() {
                self.begin_release();
            }
            let status = match self.wakeups.next_stop() {
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break,
                Err(e) => {
                    self.out
                        .send(&Message::Warn(format!("waitpid failed: {e}")));
                    break;
                }
            };
            match status {
                WaitStatus::PtraceSyscall(pid) => {
                    self.syscall(pid);
                    self.resume(pid, None);
                }
                WaitStatus::PtraceEvent(pid, sig, event) => self.event(pid, sig, event),
                WaitStatus::Stopped(pid, sig) => self.signal(pid, sig),
                WaitStatus::Exited(pid, code) => self.gone(pid, code << 8),
                WaitStatus::Signaled(pid, sig, core) => {
                    self.gone(pid, sig as i32 | if core { 0x80 } else { 0 })
                }
                _ => {}
            }
            self.tell_released();
        }
        self.tell_released();
        self.out.drain();
    }

    /// Starts letting go: the bytes go back at once where /proc/PID/mem takes them, and every
    /// thread is interrupted, to be let go at its next stop (see [`Engine::let_go`]).
    fn begin_release(&mut self) {
        self.probes.restore_all();
        let waiting: HashSet<Pid> = self.tasks.keys().copied().collect();
        for &tid in &waiting {
            let _ = ptrace::interrupt(tid);
        }
        self.release = Some(Release {
            detach: self.command.is_none() || !self.filtered,
            waiting,
            let_go: 0,
            told: false,
        });
    }

    fn tell_released(&mut self) {
        let Some(release) = &mut self.release else {
            return;
        };
        if release.told || !release.waiting.is_empty() {
            return;
        }
        release.told = true;
        let threads = release.let_go;
        let detached = release.detach;
        self.out.send(&Message::Released { threads, detached });
        self.out.flush();
    }

    /// Lets a stopped tracee go on to its next stop of interest, delivering `sig`.
    fn resume(&mut self, pid: Pid, sig: Option<Signal>) {
        if self.release.is_some() {
            return self.let_go(pid, sig);
        }
        let waiting = self.tasks.get(&pid).is_some_and(|t| t.pending.is_some());
        let result = if (self.filtered || self.light()) && !waiting {
            ptrace::cont(pid, sig)
        } else {
            ptrace::syscall(pid, sig)
        };
        if let Err(e) = result
            && e != Errno::ESRCH
        {
            tracing::debug!("ptrace: resuming {pid}: {e}");
        }
    }

    /// A stopped thread, once the engine is letting go: its own bytes and return addresses
    /// are put back, then it is detached (or, under the filter, runs on to its next filtered
    /// call). A trap it met just as it was interrupted is taken first: left queued, it would
    /// kill it.
    fn let_go(&mut self, pid: Pid, sig: Option<Signal>) {
        let tgid = self.tgid(pid);
        if sig.is_none() && tracee::fault_pending(tgid, pid) {
            let _ = ptrace::cont(pid, None);
            return;
        }
        self.probes.release_thread(tgid, pid);
        let Some(release) = &mut self.release else {
            return;
        };
        if release.waiting.remove(&pid) {
            release.let_go += 1;
        }
        if let Some(task) = self.tasks.get_mut(&pid) {
            task.pending = None;
        }
        let result = if release.detach {
            self.tasks.remove(&pid);
            ptrace::detach(pid, sig)
        } else {
            ptrace::cont(pid, sig)
        };
        if let Err(e) = result
            && e != Errno::ESRCH
        {
            tracing::debug!("ptrace: letting go of {pid}: {e}");
        }
    }

    fn send(&mut self, tgid: u32, tid: Pid, body: RawBody) {
        self.out.send(&Message::Event(RawEvent {
            ts_ns: procfs::boottime_ns(),
            tgid,
            tid: tid.as_raw() as u32,
            body,
        }));
    }

    fn tgid(&self, pid: Pid) -> u32 {
        self.tasks.get(&pid).map_or_else(
            || tracee::tgid_of(pid).unwrap_or(pid.as_raw() as u32),
            |t| t.tgid,
        )
    }

    fn adopt(&mut self, pid: Pid, tgid: u32) {
        if self.tasks.contains_key(&pid) {
            return;
        }
        self.tasks.insert(
            pid,
            Task {
                tgid,
                pending: None,
            },
        );
        if let Some(release) = &mut self.release {
            release.waiting.insert(pid);
        }
    }

    /// A signal on its way to the tracee: a breakpoint or return trap of ours, or the
    /// program's own, which is delivered.
    fn signal(&mut self, pid: Pid, sig: Signal) {
        let tgid = self.tgid(pid);
        let hit = match sig {
            Signal::SIGTRAP => self.probes.on_trap(tgid, pid),
            Signal::SIGSEGV => self.probes.on_fault(pid),
            _ => Hit::NotOurs,
        };
        match hit {
            Hit::Handled(bodies) => {
                for body in bodies {
                    self.send(tgid, pid, body);
                }
                self.resume(pid, None);
            }
            Hit::Rendezvous => {
                self.link_map_changed(tgid, pid);
                self.resume(pid, None);
            }
            Hit::Write { fd, buf, count } => {
                self.count_write(tgid, pid);
                // Output to a file is read from the file (the session follows it); to a pipe,
                // a terminal or a socket, here.
                if (fd == 1 || fd == 2) && !procfs::fd_is_file(tgid, fd as u32) {
                    self.output(tgid, pid, &[fd, buf, count, 0, 0, 0]);
                }
                self.resume(pid, None);
            }
            Hit::NotOurs => self.resume(pid, Some(sig)),
        }
        for text in std::mem::take(&mut self.probes.warnings) {
            self.out.send(&Message::Warn(text));
        }
    }

    fn event(&mut self, pid: Pid, sig: Signal, event: i32) {
        let tgid = self.tgid(pid);
        match event {
            e if e == Event::PTRACE_EVENT_FORK as i32
                || e == Event::PTRACE_EVENT_VFORK as i32
                || e == Event::PTRACE_EVENT_CLONE as i32 =>
            {
                if let Ok(new) = ptrace::getevent(pid) {
                    let new = Pid::from_raw(new as i32);
                    let thread =
                        e == Event::PTRACE_EVENT_CLONE as i32 && tracee::tgid_of(new) == Some(tgid);
                    let new_tgid = if thread { tgid } else { new.as_raw() as u32 };
                    self.adopt(new, new_tgid);
                    if !thread {
                        self.probes.forked(tgid, pid, new);
                        self.lists.forked(tgid, new_tgid);
                        if let Some(armed) = self.armed.get(&tgid).cloned() {
                            self.armed.insert(new_tgid, armed);
                        }
                        self.send(
                            tgid,
                            pid,
                            RawBody::Fork {
                                child_tgid: new_tgid,
                            },
                        );
                    }
                    if self.orphans.remove(&new) {
                        self.resume(new, None);
                    }
                }
                self.resume(pid, None);
            }
            e if e == Event::PTRACE_EVENT_EXEC as i32 => {
                self.exec(pid);
                self.resume(pid, None);
            }
            e if e == Event::PTRACE_EVENT_SECCOMP as i32 => {
                self.syscall(pid);
                self.resume(pid, None);
            }
            e if e == Event::PTRACE_EVENT_STOP as i32 => {
                if !self.tasks.contains_key(&pid) {
                    // A new task's first stop, before its creator's event: it waits for it.
                    self.orphans.insert(pid);
                } else if self.release.is_some() {
                    // Detached in a group stop, it stays stopped.
                    self.resume(pid, None);
                } else if matches!(
                    sig,
                    Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
                ) {
                    // A group stop: stay stopped until SIGCONT, as without a tracer.
                    let _ = listen(pid);
                } else {
                    if self.unscanned.remove(&tgid) {
                        // Attached: the first stop of one of its threads.
                        self.arm_mapped(tgid, pid);
                        let brk = self.lists.attached(tgid, &ProcessMemory(pid));
                        if let Some(brk) = brk
                            && !self.probes.arm_rendezvous((tgid, pid), brk)
                        {
                            self.out.send(&Message::Warn(format!(
                                "process {tgid}: ld.so's rendezvous cannot be probed: its \
                                 later loads are not seen"
                            )));
                        }
                    }
                    self.resume(pid, None);
                }
            }
            _ => self.resume(pid, None),
        }
    }

    /// A successful exec: the process's new argv and environment, then the exec itself.
    fn exec(&mut self, pid: Pid) {
        let tgid = pid.as_raw() as u32;
        let old_tid = ptrace::getevent(pid).map_or(tgid, |t| t as u32);
        // The other threads are gone, and with them every breakpoint and call under way.
        self.tasks.retain(|p, t| t.tgid != tgid || *p == pid);
        self.unscanned.remove(&tgid);
        self.adopt(pid, tgid);
        self.probes.exec(tgid);
        self.probes.thread_gone(pid);
        self.probes.thread_gone(Pid::from_raw(old_tid as i32));
        self.lib_fds.retain(|(t, _), _| *t != tgid);
        self.forget_image(tgid);
        if self.light() {
            // The kernel mapped the program and ld.so, with no system call to stop at: ld.so's
            // rendezvous is armed now, before it loads anything.
            self.arm_mapped(tgid, pid);
        }
        for (env, file, max) in [
            (false, "cmdline", EXEC_ARGV_BYTES),
            (true, "environ", EXEC_ENV_BYTES),
        ] {
            let (bytes, total) = tracee::proc_area(tgid, file, max);
            self.send(
                tgid,
                pid,
                RawBody::ExecArea {
                    env,
                    offset: 0,
                    total: total as u32,
                    bytes,
                },
            );
        }
        let comm = procfs::stat(tgid).map(|s| s.comm).unwrap_or_default();
        let filename = procfs::exe(tgid)
            .map(|p| Text::from_bytes(p.as_os_str().as_encoded_bytes()))
            .unwrap_or_default();
        self.send(
            tgid,
            pid,
            RawBody::Exec {
                old_tid,
                comm,
                filename,
            },
        );
    }

    /// A syscall (or seccomp) stop: note the call at entry, report it at exit.
    fn syscall(&mut self, pid: Pid) {
        if self.release.is_some() {
            return;
        }
        let tgid = self.tgid(pid);
        self.adopt(pid, tgid);
        match tracee::syscall_stop(pid) {
            SyscallStop::Entry { nr, args } => {
                let pending = self.entry(tgid, pid, nr, &args);
                if let Some(task) = self.tasks.get_mut(&pid) {
                    task.pending = pending;
                }
            }
            SyscallStop::Exit { ret } => {
                let Some(pending) = self.tasks.get_mut(&pid).and_then(|t| t.pending.take()) else {
                    return;
                };
                self.exit(tgid, pid, pending, ret);
            }
            SyscallStop::Other => {}
        }
    }

    fn entry(&mut self, tgid: u32, pid: Pid, nr: u64, args: &[u64; 6]) -> Option<Pending> {
        match nr {
            SYS_OPENAT | SYS_OPEN => {
                let (path_at, flags) = if nr == SYS_OPENAT {
                    (args[1], args[2])
                } else {
                    (args[0], args[1])
                };
                let path = tracee::read_string(pid, path_at, STR_MAX);
                path_kind(path.as_bytes()).library.then_some(Pending::Open {
                    path,
                    flags: flags as u32,
                })
            }
            SYS_WRITE if args[0] == 1 || args[0] == 2 => {
                self.output(tgid, pid, args);
                None
            }
            SYS_MMAP if args[2] & PROT_EXEC != 0 => {
                let fd = args[4] as u32;
                let fd_path = std::path::PathBuf::from(format!("/proc/{tgid}/fd/{fd}"));
                let known = self.lib_fds.get(&(tgid, fd)).copied();
                // An fd opened before `attach` counts by its name.
                if known.is_none()
                    && !std::fs::read_link(&fd_path)
                        .is_ok_and(|p| path_kind(p.as_os_str().as_encoded_bytes()).library)
                {
                    return None;
                }
                let current = procfs::file_id(&fd_path);
                let opened = known.or(current)?;
                if current != Some(opened) {
                    // Closed since, and reused for another file.
                    self.lib_fds.remove(&(tgid, fd));
                    self.send(tgid, pid, RawBody::LibClose { fd });
                    return None;
                }
                Some(Pending::Mmap {
                    fd,
                    id: opened,
                    len: args[1],
                    prot: args[2] as u32,
                    pgoff: args[5],
                })
            }
            _ => None,
        }
    }

    fn exit(&mut self, tgid: u32, pid: Pid, pending: Pending, ret: i64) {
        let body = match pending {
            Pending::Open { path, flags } => {
                if ret >= 0 {
                    let fd = ret as u32;
                    if let Some(id) =
                        procfs::file_id(std::path::Path::new(&format!("/proc/{tgid}/fd/{fd}")))
                    {
                        self.lib_fds.insert((tgid, fd), id);
                    }
                }
                RawBody::LibOpen { ret, flags, path }
            }
            Pending::Mmap {
                fd,
                id,
                len,
                prot,
                pgoff,
            } => {
                if !(-4095..0).contains(&ret) {
                    let file = std::path::PathBuf::from(format!("/proc/{tgid}/fd/{fd}"));
                    let refused =
                        self.probes
                            .arm((tgid, pid), (&file, id), (ret as u64, len, pgoff));
                    self.warn_refused(&refused);
                }
                RawBody::LibMmap {
                    fd,
                    addr: ret,
                    len,
                    prot,
                    stopped: false,
                }
            }
        };
        self.send(tgid, pid, body);
    }

    /// ld.so is at its rendezvous in `tgid`: the objects its list gained since last read are
    /// loads, and their functions are armed before any of their code runs (ld.so relocates
    /// and initialises them only after this call).
    fn link_map_changed(&mut self, tgid: u32, pid: Pid) {
        let Some(added) = self.lists.changed(tgid, &ProcessMemory(pid)) else {
            return;
        };
        for object in added {
            self.send(
                tgid,
                pid,
                RawBody::LibLinked {
                    path: object.name,
                    base: object.base,
                },
            );
        }
        self.arm_mapped(tgid, pid);
    }

    /// `attach`: no system call stops at all. Loads are read from ld.so's own list at its
    /// rendezvous breakpoint, writes at the C library's `write`, and the process runs at its
    /// own pace between breakpoints.
    fn light(&self) -> bool {
        self.command.is_none()
    }

    /// What belonged to `tgid`'s program, gone with its exec or its end: ld.so's list, what
    /// was armed, its writes counted.
    fn forget_image(&mut self, tgid: u32) {
        self.lists.forget(tgid);
        self.armed.remove(&tgid);
        self.write_hits.remove(&tgid);
    }

    /// Arms `tgid`'s code mappings not armed yet, through its stopped thread `pid`.
    fn arm_mapped(&mut self, tgid: u32, pid: Pid) {
        let armed = self.armed.entry(tgid).or_default();
        let refused = attach::arm_mapped(&mut self.probes, armed, tgid, pid);
        self.warn_refused(&refused);
    }

    /// A write to stdout or stderr: its first bytes, within the process's budget (as the
    /// eBPF backend keeps them).
    fn output(&mut self, tgid: u32, pid: Pid, args: &[u64; 6]) {
        let (fd, buf, count) = (args[0] as u32, args[1], args[2]);
        let keep = count.min(OUTPUT_MAX as u64);
        let kept = this_second(&mut self.output_budget, tgid);
        if *kept + keep > OUTPUT_BUDGET_PER_S {
            if *kept <= OUTPUT_BUDGET_PER_S {
                *kept = OUTPUT_BUDGET_PER_S + 1;
                self.out.send(&Message::Warn(format!(
                    "process {tgid} writes over {} KiB a second: its output is not all kept",
                    OUTPUT_BUDGET_PER_S >> 10
                )));
            }
            return;
        }
        *kept += keep;
        let bytes = tracee::read_bytes(pid, buf, keep as usize);
        self.send(tgid, pid, RawBody::Output { fd, count, bytes });
    }

    /// Every `write()` stops, whatever its fd: a process that writes often (a file written in
    /// small pieces) would pay a stop for each. Past [`WRITES_PER_S`] in a second, its `write`
    /// breakpoint is taken out.
    fn count_write(&mut self, tgid: u32, pid: Pid) {
        let hits = this_second(&mut self.write_hits, tgid);
        *hits += 1;
        if *hits == WRITES_PER_S {
            self.probes.disarm((tgid, pid), Probe::Write);
            self.out.send(&Message::Warn(format!(
                "process {tgid} calls write() over {WRITES_PER_S} times a second: its output \
                 is no longer watched, so as not to slow it (--log or --journal give \
                 Ollama's log)"
            )));
        }
    }

    fn warn_refused(&mut self, refused: &[String]) {
        if !refused.is_empty() {
            self.out.send(&Message::Warn(format!(
                "not probed, their first instruction cannot be stepped over: {}",
                refused.join(", ")
            )));
        }
    }

    /// A task was reaped: its exit, and the command's end for the event loop.
    fn gone(&mut self, pid: Pid, wait_status: i32) {
        self.orphans.remove(&pid);
        if let Some(release) = &mut self.release {
            release.waiting.remove(&pid);
        }
        let tgid = self
            .tasks
            .remove(&pid)
            .map_or(pid.as_raw() as u32, |t| t.tgid);
        self.probes.thread_gone(pid);
        let group_dead = !self.tasks.values().any(|t| t.tgid == tgid);
        if group_dead {
            self.output_budget.remove(&tgid);
            self.lib_fds.retain(|(t, _), _| *t != tgid);
            self.probes.process_gone(tgid);
            self.forget_image(tgid);
        }
        self.send(
            tgid,
            pid,
            RawBody::Exit {
                status: Some(wait_status),
                group_dead,
            },
        );
        if Some(pid) == self.command {
            self.out.send(&Message::CommandExit { wait_status });
            self.out.flush();
        }
    }
}

/// `tgid`'s count in the current one-second window of `windows`, a new window begun when the
/// last is over.
fn this_second(windows: &mut HashMap<u32, (std::time::Instant, u64)>, tgid: u32) -> &mut u64 {
    let now = std::time::Instant::now();
    let window = windows.entry(tgid).or_insert((now, 0));
    if now.duration_since(window.0) >= std::time::Duration::from_secs(1) {
        *window = (now, 0);
    }
    &mut window.1
}

/// PTRACE_LISTEN: a tracee in a group stop stays stopped, as without a tracer, while its
/// next stop (SIGCONT, a kill) is still reported.
fn listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no pointers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid.as_raw(), 0, 0) };
    Errno::result(rc).map(drop)
}
