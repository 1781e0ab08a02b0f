//! Raw events: what every backend produces, before the collector adds process state.
//! The eBPF backend decodes ring-buffer records into these with [`decode`].
use std::mem::size_of;

use thiserror::Error;
use vgpu_trace_common::{
    DlEnterPayload, DlFunc, DlReturnPayload, EventHeader, EventKind, ExecAreaPayload,
    ExecFailPayload, ExecPayload, ExitPayload, ForkPayload, LibClosePayload, LibMmapPayload,
    LibOpenPayload, OutputPayload, api::ApiReturnPayload, blob_flags, dl_return_flags, exec_area,
};

use crate::text::Text;

/// Serializable for the ptrace engine, which runs as a process of its own.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RawEvent {
    /// CLOCK_BOOTTIME nanoseconds.
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub body: RawBody,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RawBody {
    /// A process that was already running when tracing began (read from /proc), or the
    /// command `run` is about to start (`announce` false: its exec will speak for it).
    Existing {
        ppid: u32,
        comm: String,
        exe: Option<Text>,
        argv: Vec<Text>,
        env: Vec<Text>,
        announce: bool,
    },
    Exec {
        old_tid: u32,
        comm: String,
        filename: Text,
    },
    /// Part of a new program's argv or environment area (NUL-separated strings), sent just
    /// before its `Exec` by the same thread.
    ExecArea {
        env: bool,
        /// Where `bytes` start in the area, and the area's whole length.
        offset: u32,
        total: u32,
        bytes: Vec<u8>,
    },
    ExecFail {
        errno: i32,
        filename: Text,
        argv: Vec<Text>,
        /// argv had more entries than were copied.
        more: bool,
    },
    Fork {
        child_tgid: u32,
    },
    Exit {
        /// Wait status (`code << 8`, or the signal number), when the kernel layout is known.
        status: Option<i32>,
        /// The last thread exited: the process is gone.
        group_dead: bool,
    },
    DlEnter {
        #[serde(with = "dl_func")]
        func: DlFunc,
        /// dlopen/dlmopen mode.
        mode: u32,
        /// Handle (dlsym, dlvsym, dlclose) or namespace (dlmopen).
        arg: u64,
        /// File (dlopen, dlmopen) or symbol (dlsym, dlvsym); `None` for a NULL pointer.
        name: Option<Text>,
        version: Option<Text>,
    },
    DlReturn {
        #[serde(with = "dl_func")]
        func: DlFunc,
        ret: u64,
        /// The name and version, read at return because the entry could not read them.
        late_name: Option<(Option<Text>, Option<Text>)>,
        /// dlopen/dlmopen: the path ld.so loaded (the handle's `l_name`); `None` if unknown
        /// or empty (the main program).
        loaded_path: Option<Text>,
    },
    DlError {
        text: Text,
    },
    /// openat of a library-looking path: the fd or a negative errno.
    LibOpen {
        ret: i64,
        flags: u32,
        path: Text,
    },
    /// An executable mapping of an fd from `LibOpen`.
    LibMmap {
        fd: u32,
        addr: i64,
        len: u64,
        prot: u32,
        /// The kernel stopped the process until the file's API uprobes are armed.
        stopped: bool,
    },
    LibClose {
        fd: u32,
    },
    /// ld.so added this object to the process's list of loaded objects, read at its
    /// rendezvous (the ptrace backend under `attach`, which stops at no system call): a load
    /// seen without the opens before it.
    LibLinked {
        path: Text,
        /// `l_addr`: where the object sits against its file's addresses.
        base: u64,
    },
    /// A write to stdout (fd 1) or stderr (fd 2): the first bytes of it, and how many it
    /// asked to write.
    Output {
        fd: u32,
        count: u64,
        bytes: Vec<u8>,
    },
    /// A traced CUDA/NVML function returned (`api::SPECS[id - 1]`).
    ApiReturn {
        id: u32,
        ret: i32,
        outs: [u64; 2],
        text: Option<Text>,
    },
}

/// `DlFunc` (a wire type without serde) by its number.
mod dl_func {
    use vgpu_trace_common::DlFunc;

    pub fn serialize<S: serde::Serializer>(f: &DlFunc, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*f as u32)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DlFunc, D::Error> {
        let n = <u32 as serde::Deserialize>::deserialize(d)?;
        DlFunc::from_u32(n).ok_or_else(|| serde::de::Error::custom(format!("no dl function {n}")))
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    ShortHeader(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record of kind {kind:?} is {len} bytes, needs {need}")]
    Short {
        kind: EventKind,
        len: usize,
        need: usize,
    },
    #[error("unknown dl function {0}")]
    UnknownFunc(u32),
}

fn read<T: Copy>(bytes: &[u8], offset: usize) -> T {
    assert!(offset + size_of::<T>() <= bytes.len());
    // SAFETY: bounds checked above; T is plain old data from vgpu-trace-common.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(offset).cast::<T>()) }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<RawEvent, DecodeError> {
    const HEADER: usize = size_of::<EventHeader>();
    if bytes.len() < HEADER {
        return Err(DecodeError::ShortHeader(bytes.len()));
    }
    let header: EventHeader = read(bytes, 0);
    let kind = EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let payload_end = HEADER + kind.payload_size();
    let need = payload_end + header.blob_len as usize;
    if bytes.len() < need {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
            need,
        });
    }
    let blob = Blob {
        bytes: &bytes[payload_end..need],
        flags: header.blob_flags,
    };
    let body = match kind {
        EventKind::Exec => {
            let p: ExecPayload = read(bytes, HEADER);
            RawBody::Exec {
                old_tid: p.old_tid,
                comm: c_string(&p.comm),
                filename: blob.text(),
            }
        }
        EventKind::ExecArea => {
            let p: ExecAreaPayload = read(bytes, HEADER);
            RawBody::ExecArea {
                env: p.area == exec_area::ENV,
                offset: p.offset,
                total: p.total,
                bytes: blob.bytes.to_vec(),
            }
        }
        EventKind::ExecFail => {
            let p: ExecFailPayload = read(bytes, HEADER);
            let mut items = blob.list();
            let filename = if items.is_empty() {
                Text::default()
            } else {
                items.remove(0)
            };
            RawBody::ExecFail {
                errno: (-p.ret) as i32,
                filename,
                argv: items,
                more: p.more != 0,
            }
        }
        EventKind::Fork => {
            let p: ForkPayload = read(bytes, HEADER);
            RawBody::Fork {
                child_tgid: p.child_tgid,
            }
        }
        EventKind::Exit => {
            let p: ExitPayload = read(bytes, HEADER);
            RawBody::Exit {
                status: (p.code_known != 0).then_some(p.exit_code as i32),
                group_dead: p.group_dead != 0,
            }
        }
        EventKind::DlEnter => {
            let p: DlEnterPayload = read(bytes, HEADER);
            let func = DlFunc::from_u32(p.func).ok_or(DecodeError::UnknownFunc(p.func))?;
            let (name, version) = name_and_version(func, &blob);
            RawBody::DlEnter {
                func,
                mode: p.mode,
                arg: p.arg,
                name,
                version,
            }
        }
        EventKind::DlReturn => {
            let p: DlReturnPayload = read(bytes, HEADER);
            let func = DlFunc::from_u32(p.func).ok_or(DecodeError::UnknownFunc(p.func))?;
            let mut items = blob.list().into_iter();
            let late_name = (p.flags & dl_return_flags::LATE_NAME != 0).then(|| {
                let name = items.next();
                let version = if func == DlFunc::Dlvsym {
                    items.next()
                } else {
                    None
                };
                (name, version)
            });
            let loaded_path = (p.flags & dl_return_flags::LOADED_PATH != 0)
                .then(|| items.next())
                .flatten()
                .filter(|t| !t.value.is_empty());
            RawBody::DlReturn {
                func,
                ret: p.ret,
                late_name,
                loaded_path,
            }
        }
        EventKind::DlError => RawBody::DlError { text: blob.text() },
        EventKind::LibOpen => {
            let p: LibOpenPayload = read(bytes, HEADER);
            RawBody::LibOpen {
                ret: p.ret,
                flags: p.flags,
                path: blob.text(),
            }
        }
        EventKind::LibMmap => {
            let p: LibMmapPayload = read(bytes, HEADER);
            RawBody::LibMmap {
                fd: p.fd,
                addr: p.addr,
                len: p.len,
                prot: u32::from(p.prot),
                stopped: p.stopped != 0,
            }
        }
        EventKind::ApiReturn => {
            let p: ApiReturnPayload = read(bytes, HEADER);
            let text = (blob.flags & blob_flags::NULL_PTR == 0
                && (!blob.bytes.is_empty() || blob.flags != 0))
                .then(|| blob.text());
            RawBody::ApiReturn {
                id: p.id,
                ret: p.ret,
                outs: p.outs,
                text,
            }
        }
        EventKind::LibClose => {
            let p: LibClosePayload = read(bytes, HEADER);
            RawBody::LibClose { fd: p.fd }
        }
        EventKind::Output => {
            let p: OutputPayload = read(bytes, HEADER);
            RawBody::Output {
                fd: p.fd,
                count: p.count,
                bytes: blob.bytes.to_vec(),
            }
        }
    };
    Ok(RawEvent {
        ts_ns: header.ts_ns,
        tgid: (header.pid_tgid >> 32) as u32,
        tid: header.pid_tgid as u32,
        body,
    })
}

struct Blob<'a> {
    bytes: &'a [u8],
    flags: u16,
}

impl Blob<'_> {
    fn text(&self) -> Text {
        // A C string holds no NUL: one at the end is its terminator.
        let mut t = Text::from_bytes(self.bytes.strip_suffix(&[0]).unwrap_or(self.bytes));
        t.truncated = self.flags & blob_flags::TRUNCATED != 0;
        t.unreadable = self.flags & blob_flags::READ_FAILED != 0;
        t
    }

    /// NUL-separated items; the blob's truncation or fault belongs to the last one.
    fn list(&self) -> Vec<Text> {
        let body = self.bytes.strip_suffix(&[0]).unwrap_or(self.bytes);
        if body.is_empty() && self.flags & (blob_flags::TRUNCATED | blob_flags::READ_FAILED) == 0 {
            return Vec::new();
        }
        let mut items: Vec<Text> = body.split(|b| *b == 0).map(Text::from_bytes).collect();
        // A blob ending without NUL means the last item was cut mid-string.
        let cut_inside = !self.bytes.ends_with(&[0]);
        if let Some(last) = items.last_mut() {
            last.truncated = self.flags & blob_flags::TRUNCATED != 0 && cut_inside;
            last.unreadable = self.flags & blob_flags::READ_FAILED != 0 && cut_inside;
        }
        items
    }
}

/// A `dl*` call's name (and dlvsym's version) from a DlEnter or late-name DlReturn blob.
fn name_and_version(func: DlFunc, blob: &Blob) -> (Option<Text>, Option<Text>) {
    match func {
        DlFunc::Dlclose => (None, None),
        _ if blob.flags & blob_flags::NULL_PTR != 0 && blob.bytes.is_empty() => (None, None),
        DlFunc::Dlvsym => {
            let mut items = blob.list().into_iter();
            (items.next(), items.next())
        }
        _ => (Some(blob.text()), None),
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<P>(kind: EventKind, payload: P, blob: &[u8], flags: u16) -> Vec<u8> {
        let header = EventHeader {
            ts_ns: 42,
            pid_tgid: (100u64 << 32) | 101,
            kind: kind as u32,
            blob_len: blob.len() as u16,
            blob_flags: flags,
        };
        let mut out = Vec::new();
        // SAFETY: reading the bytes of plain repr(C) values.
        unsafe {
            out.extend_from_slice(std::slice::from_raw_parts(
                (&header as *const EventHeader).cast::<u8>(),
                size_of::<EventHeader>(),
            ));
            out.extend_from_slice(std::slice::from_raw_parts(
                (&payload as *const P).cast::<u8>(),
                size_of::<P>(),
            ));
        }
        out.extend_from_slice(blob);
        out
    }

    #[test]
    fn decodes_a_name_read_at_return_and_the_loaded_path() {
        let flags = dl_return_flags::LATE_NAME | dl_return_flags::LOADED_PATH;
        let p = DlReturnPayload {
            func: DlFunc::Dlopen as u32,
            flags,
            ret: 0x1234,
        };
        let blob = b"libcuda.so.1\0/opt/vgpu/lib/libcuda.so.1\0";
        let ev = decode(&record(EventKind::DlReturn, p, blob, 0)).unwrap();
        assert_eq!(
            ev.body,
            RawBody::DlReturn {
                func: DlFunc::Dlopen,
                ret: 0x1234,
                late_name: Some((Some("libcuda.so.1".into()), None)),
                loaded_path: Some("/opt/vgpu/lib/libcuda.so.1".into()),
            }
        );
        let p = DlReturnPayload {
            flags: dl_return_flags::LOADED_PATH,
            ..p
        };
        let ev = decode(&record(EventKind::DlReturn, p, b"/lib/libm.so.6\0", 0)).unwrap();
        let RawBody::DlReturn {
            late_name,
            loaded_path,
            ..
        } = ev.body
        else {
            panic!()
        };
        assert_eq!(
            (late_name, loaded_path),
            (None, Some("/lib/libm.so.6".into()))
        );
        // dlopen(NULL) returns the main program, whose l_name is empty.
        let ev = decode(&record(EventKind::DlReturn, p, b"\0", 0)).unwrap();
        assert!(matches!(
            ev.body,
            RawBody::DlReturn {
                loaded_path: None,
                ..
            }
        ));
    }

    #[test]
    fn decodes_dlopen_entry() {
        let p = DlEnterPayload {
            func: DlFunc::Dlopen as u32,
            mode: 2,
            arg: 0,
        };
        let ev = decode(&record(EventKind::DlEnter, p, b"libm.so.6", 0)).unwrap();
        assert_eq!((ev.ts_ns, ev.tgid, ev.tid), (42, 100, 101));
        assert_eq!(
            ev.body,
            RawBody::DlEnter {
                func: DlFunc::Dlopen,
                mode: 2,
                arg: 0,
                name: Some(Text::new("libm.so.6")),
                version: None
            }
        );
    }

    #[test]
    fn dlopen_null_has_no_name() {
        let p = DlEnterPayload {
            func: DlFunc::Dlopen as u32,
            mode: 1,
            arg: 0,
        };
        let ev = decode(&record(EventKind::DlEnter, p, b"", blob_flags::NULL_PTR)).unwrap();
        assert!(matches!(ev.body, RawBody::DlEnter { name: None, .. }));
    }

    #[test]
    fn failed_exec_keeps_filename_apart_and_marks_cut_item() {
        let p = ExecFailPayload {
            ret: -2,
            argc: 2,
            more: 1,
        };
        let ev = decode(&record(
            EventKind::ExecFail,
            p,
            b"/bin/x\0x\0ab",
            blob_flags::TRUNCATED,
        ))
        .unwrap();
        let RawBody::ExecFail {
            errno,
            filename,
            argv,
            more,
        } = ev.body
        else {
            panic!("wrong kind")
        };
        assert_eq!((errno, filename), (2, Text::new("/bin/x")));
        assert_eq!(argv[0], Text::new("x"));
        assert_eq!(argv[1].value, "ab");
        assert!(argv[1].truncated);
        assert!(more);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 3]), Err(DecodeError::ShortHeader(3)));
        let mut r = record(EventKind::DlError, (), b"abc", 0);
        r.truncate(r.len() - 1);
        assert!(matches!(decode(&r), Err(DecodeError::Short { .. })));
        let mut r = record(EventKind::DlError, (), b"", 0);
        r[16] = 99;
        assert_eq!(decode(&r), Err(DecodeError::UnknownKind(99)));
    }
}
