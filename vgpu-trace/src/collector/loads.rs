//! ld.so's file work in one process: the library paths each thread tried and failed, the fds
//! it opened on library paths, and which of them it mapped executable (a load).
use std::collections::HashMap;

use crate::model::{Probe, file_name};
use crate::text::Text;

#[derive(Debug, Default)]
pub struct Loads {
    /// Failed opens by thread since its last load or outermost dlopen return.
    probes: HashMap<u32, Vec<Probe>>,
    /// Open fds on library paths.
    fds: HashMap<u32, Opened>,
}

#[derive(Debug)]
pub struct Opened {
    pub path: Text,
    pub tid: u32,
    /// The failed attempts at the same file name that came before this one.
    pub probes: Vec<Probe>,
    mapped: bool,
}

impl Loads {
    pub fn open(&mut self, tid: u32, ret: i64, path: Text) {
        if ret < 0 {
            let error = nix::errno::Errno::from_raw(-ret as i32);
            self.probes.entry(tid).or_default().push(Probe {
                path,
                error: format!("{error:?}"),
            });
            return;
        }
        let name = file_name(&path.value).to_string();
        let tried = self.probes.entry(tid).or_default();
        let (same, other): (Vec<Probe>, Vec<Probe>) = tried
            .drain(..)
            .partition(|p| file_name(&p.path.value) == name);
        *tried = other;
        self.fds.insert(
            ret as u32,
            Opened {
                path,
                tid,
                probes: same,
                mapped: false,
            },
        );
    }

    /// The first executable mapping of a library fd: a load.
    pub fn mapped(&mut self, fd: u32) -> Option<Opened> {
        let opened = self.fds.get_mut(&fd).filter(|o| !o.mapped)?;
        opened.mapped = true;
        Some(Opened {
            path: opened.path.clone(),
            tid: opened.tid,
            probes: std::mem::take(&mut opened.probes),
            mapped: true,
        })
    }

    pub fn close(&mut self, fd: u32) {
        self.fds.remove(&fd);
    }

    /// What a thread tried and did not find, for the dlopen that just failed.
    pub fn take_probes(&mut self, tid: u32) -> Vec<Probe> {
        self.probes.remove(&tid).unwrap_or_default()
    }
}
