//! Any bytes given to `replay` (which also reaches a verdict) must give a record or an error,
//! never a panic, whatever the sink does with the events; so must the rule parsers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vgpu_trace::sink::{PerfettoSink, Sink, TeeSink, TimelineSink};

fuzz_target!(|data: &[u8]| {
    let mut sink = TeeSink(vec![
        Box::new(TimelineSink::new(std::io::sink(), true)) as Box<dyn Sink>,
        Box::new(PerfettoSink::new(std::io::sink())),
    ]);
    let _ = vgpu_trace::replay::replay(data, &mut sink);
    let text = String::from_utf8_lossy(data);
    let _ = vgpu_trace::judge::expect::Expectations::parse(&text);
    let _ = vgpu_trace::judge::expect::Rule::parse_inline(&text);
});
