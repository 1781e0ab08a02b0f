//! Any bytes given to `replay` must give a record or an error, never a panic, whatever the
//! sink does with the events.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vgpu_trace::sink::{PerfettoSink, Sink, TeeSink, TimelineSink};

fuzz_target!(|data: &[u8]| {
    let mut sink = TeeSink(vec![
        Box::new(TimelineSink::new(std::io::sink(), true)) as Box<dyn Sink>,
        Box::new(PerfettoSink::new(std::io::sink())),
    ]);
    let _ = vgpu_trace::replay::replay(data, &mut sink);
    let _ = vgpu_trace::analysis::expect::Expectations::parse(&String::from_utf8_lossy(data));
});
