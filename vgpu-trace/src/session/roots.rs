//! The root directories of followed processes that see another root than the tracer's (a
//! container, a chroot), held open from their first event. A process that exits at once, as
//! one whose dlopen failed may, takes /proc/PID/root with it; its files are still read where it
//! saw them through the held directory. One descriptor per distinct root, shared by every
//! process in it; none for processes in the tracer's own root, which the host's view serves.
use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Arc;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fstat, stat};

/// A root directory, by the device and inode that tell one from another.
type RootId = (u64, u64);

#[derive(Default)]
pub struct Roots {
    /// The tracer's own root; `None` until first needed.
    host: Option<Option<RootId>>,
    by_id: HashMap<RootId, Arc<OwnedFd>>,
    /// Each process whose root was taken: its held root, or `None` for the tracer's own, so a
    /// process in the host's root is looked at once, not at every library it loads.
    by_pid: HashMap<u32, Option<Arc<OwnedFd>>>,
}

impl Roots {
    /// Takes `pid`'s root now (an exec, a process found at start), unless it is gone; what
    /// was taken for it before is kept then.
    pub fn take(&mut self, pid: u32) {
        let Ok(fd) = open(
            format!("/proc/{pid}/root").as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        let Ok(st) = fstat(&fd) else {
            return;
        };
        let id = (st.st_dev, st.st_ino);
        let root = (Some(id) != self.host())
            .then(|| Arc::clone(self.by_id.entry(id).or_insert_with(|| Arc::new(fd))));
        self.by_pid.insert(pid, root);
    }

    /// Takes `pid`'s root unless it was taken already.
    pub fn ensure(&mut self, pid: u32) {
        if !self.by_pid.contains_key(&pid) {
            self.take(pid);
        }
    }

    /// A new process sees its parent's root.
    pub fn inherit(&mut self, child: u32, parent: u32) {
        self.ensure(parent);
        if let Some(root) = self.by_pid.get(&parent).cloned() {
            self.by_pid.insert(child, root);
        }
    }

    /// Where `pid`'s root can be read (`/proc/self/fd/N`), if it is not the tracer's.
    pub fn of(&self, pid: u32) -> Option<Held> {
        self.by_pid.get(&pid).cloned().flatten().map(Held)
    }

    /// `pid` has exited: its root is let go once no process (and no read under way) needs it.
    pub fn forget(&mut self, pid: u32) {
        if let Some(Some(_)) = self.by_pid.remove(&pid) {
            self.by_id.retain(|_, fd| Arc::strong_count(fd) > 1);
        }
    }

    fn host(&mut self) -> Option<RootId> {
        *self
            .host
            .get_or_insert_with(|| stat("/").ok().map(|st| (st.st_dev, st.st_ino)))
    }
}

/// A held root, kept open for as long as a read needs it.
#[derive(Clone, Debug)]
pub struct Held(Arc<OwnedFd>);

impl Held {
    /// The root as a path this process can open files under.
    pub fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.0.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_in_the_tracers_root_needs_no_descriptor() {
        let mut roots = Roots::default();
        roots.take(std::process::id());
        assert!(roots.of(std::process::id()).is_none());
        assert!(roots.by_id.is_empty());
        // Known to be in the host's root: not looked at again for each library it loads.
        assert!(matches!(roots.by_pid.get(&std::process::id()), Some(None)));
        roots.inherit(1_000_000, std::process::id());
        assert!(roots.of(1_000_000).is_none());
        // A pid that is gone holds nothing, and forgetting it is harmless.
        roots.take(u32::MAX - 1);
        roots.forget(u32::MAX - 1);
        assert!(roots.by_id.is_empty());
    }
}
