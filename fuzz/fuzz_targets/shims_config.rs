//! shims.toml from any text: pairs or an error, never a panic; the pairs come sorted, one per
//! api, and read back the same once written out again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vgpu_trace::loader::classify::{Api, ShimSet};
use vgpu_trace::loader::shims::parse_config;

/// `text` as a TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fuzz_target!(|data: &[u8]| {
    // The configuration is read as UTF-8 (read_to_string), so other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pairs) = parse_config(text) else {
        return;
    };
    assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
    let mut set = ShimSet::default();
    for (api, path) in &pairs {
        if let Ok(api) = Api::parse(api) {
            set.add(api, path, "shims.toml");
        }
    }
    assert!(set.shims.len() <= 2);
    let written: String = pairs
        .iter()
        .map(|(api, path)| format!("{} = {}\n", quote(api), quote(path)))
        .collect();
    assert_eq!(parse_config(&written).expect("written back"), pairs);
});
