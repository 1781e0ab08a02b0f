//! pipeline-rate [EVENTS]: how many events a second the userspace pipeline (decode → reorder →
//! collector → enrichment → verdict → JSON Lines to /dev/null) takes, on synthetic ring-buffer
//! records shaped like a dlopen+dlsym loop (the bench's burst): one process, four records an
//! iteration. Prints `events_per_s=`.
use std::mem::size_of;
use std::time::Instant;

use vgpu_trace::sink::JsonlSink;
use vgpu_trace_common::{
    DlEnterPayload, DlFunc, DlReturnPayload, EventHeader, EventKind, dl_return_flags,
};

const PID: u64 = 4242;

/// One record as the kernel side writes it: header, payload, blob.
fn record<P>(ts_ns: u64, kind: EventKind, payload: P, blob: &[u8]) -> Vec<u8> {
    let header = EventHeader {
        ts_ns,
        pid_tgid: (PID << 32) | PID,
        kind: kind as u32,
        blob_len: blob.len() as u16,
        blob_flags: 0,
    };
    let mut out = Vec::with_capacity(size_of::<EventHeader>() + size_of::<P>() + blob.len());
    // SAFETY: plain repr(C) wire structs, read as bytes.
    unsafe {
        out.extend_from_slice(std::slice::from_raw_parts(
            (&raw const header).cast::<u8>(),
            size_of::<EventHeader>(),
        ));
        out.extend_from_slice(std::slice::from_raw_parts(
            (&raw const payload).cast::<u8>(),
            size_of::<P>(),
        ));
    }
    out.extend_from_slice(blob);
    out
}

fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let handle = 0x5555_0000u64;
    let iteration = |i: u64| {
        let ts = 1_000_000_000 + i * 1_000;
        [
            record(
                ts,
                EventKind::DlEnter,
                DlEnterPayload {
                    func: DlFunc::Dlopen as u32,
                    mode: 2,
                    arg: 0,
                },
                b"libm.so.6",
            ),
            record(
                ts + 200,
                EventKind::DlReturn,
                DlReturnPayload {
                    func: DlFunc::Dlopen as u32,
                    flags: dl_return_flags::LOADED_PATH,
                    ret: handle,
                },
                b"/lib/x86_64-linux-gnu/libm.so.6\0",
            ),
            record(
                ts + 400,
                EventKind::DlEnter,
                DlEnterPayload {
                    func: DlFunc::Dlsym as u32,
                    mode: 0,
                    arg: handle,
                },
                b"cos",
            ),
            record(
                ts + 600,
                EventKind::DlReturn,
                DlReturnPayload {
                    func: DlFunc::Dlsym as u32,
                    flags: 0,
                    ret: 0x7f00_0000_1234,
                },
                b"",
            ),
        ]
    };
    let records: Vec<Vec<u8>> = (0..events.div_ceil(4) as u64).flat_map(iteration).collect();
    let out = std::io::BufWriter::new(std::fs::File::create("/dev/null")?);
    let mut sink = JsonlSink::new(out);
    let start = Instant::now();
    let summary = vgpu_trace::session::run_records(records.iter().map(Vec::as_slice), &mut sink)?;
    let elapsed = start.elapsed().as_secs_f64();
    println!("events={}", summary.events);
    println!("calls={}", summary.calls);
    println!("seconds={elapsed:.3}");
    println!("events_per_s={:.0}", summary.events as f64 / elapsed);
    Ok(())
}
