//! Names a traced process makes up: exact in JSON (escaped, with the bytes of what is not
//! UTF-8), harmless on a terminal, and flagged when cut.
use serde_json::Value;

mod common;
use common::*;

/// The names `storm strings` used, from its `name=HEX` lines.
fn names(stdout: &[u8]) -> Vec<Vec<u8>> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("name="))
        .map(unhex)
        .collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The exact bytes a JSON `Text` stands for, and whether it says it was cut.
fn bytes_of(text: &Value) -> (Vec<u8>, bool) {
    match text {
        Value::String(s) => (s.as_bytes().to_vec(), false),
        Value::Object(o) => {
            let bytes = match o.get("hex").and_then(Value::as_str) {
                Some(hex) => unhex(hex),
                None => o["value"].as_str().unwrap().as_bytes().to_vec(),
            };
            (bytes, o.get("truncated") == Some(&Value::Bool(true)))
        }
        other => panic!("not a text: {other}"),
    }
}

/// `seen` is `name` exactly, or a prefix of it flagged as cut.
fn assert_exact_or_flagged(seen: &Value, name: &[u8], cut_expected: bool) {
    let (bytes, cut) = bytes_of(seen);
    if cut_expected {
        assert!(cut, "{seen}");
        assert!(name.starts_with(&bytes), "{seen}");
    } else {
        assert!(!cut, "{seen}");
        assert_eq!(bytes, name, "{seen}");
    }
}

fn storm_strings() -> Vec<String> {
    vec![fixture("storm").display().to_string(), "strings".into()]
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn hostile_names_are_exact_in_json_and_flagged_when_cut() {
    let _serial = serial();
    let (trace, out) = run_traced("hostile-strings", &[], &mut storm_strings());
    assert!(out.status.success(), "{out:?}");
    let names = names(&out.stdout);
    assert_eq!(names.len(), 5);
    let opens: Vec<&Value> = trace
        .of_type("call")
        .filter(|c| c["func"] == "dlopen" && c["ok"] == false)
        .collect();
    assert_eq!(opens.len(), names.len(), "{opens:?}");
    for (i, (open, name)) in opens.iter().zip(&names).enumerate() {
        // The last is 4096 bytes: longer than any path (PATH_MAX counts the NUL).
        assert_exact_or_flagged(&open["name"], name, i == 4);
    }
    assert_eq!(opens[0]["name"], "\u{1b}[31mred\nline.so");
    assert_eq!(opens[1]["name"]["hex"], "6c6962fffe2e736f");
    assert_eq!(opens[2]["name"], "-rf");
    assert_eq!(opens[3]["name"].as_str().unwrap().len(), 4095);

    let exec = trace
        .of_type("exec")
        .find(|e| e["argv"][1] == "nothing")
        .expect("the child's exec");
    let argv = exec["argv"].as_array().unwrap();
    assert_eq!(argv.len(), 2 + names.len(), "{argv:?}");
    for (seen, name) in argv[2..].iter().zip(&names) {
        let (_, cut) = bytes_of(seen);
        // The argument area is copied up to 8 KiB: the last may be cut, and then says so.
        assert_exact_or_flagged(seen, name, cut);
    }
    trace.assert_nothing_lost();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn hostile_names_cannot_drive_the_terminal() {
    let _serial = serial();
    let out = tracer()
        .args(["run", "--color", "always", "--"])
        .args(storm_strings())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The fixture's own output is hex; everything else on stdout is the timeline.
    let timeline: Vec<&[u8]> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.starts_with(b"name="))
        .collect();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in &timeline {
        // Colour is the tracer's only escape: ESC followed by a colour sequence it wrote.
        let mut rest = *line;
        while let Some(at) = rest.iter().position(|b| *b == 0x1b) {
            let seq = &rest[at..];
            let end = seq
                .iter()
                .position(|b| *b == b'm')
                .expect("an SGR sequence");
            assert!(
                seq[1] == b'[' && seq[2..end].iter().all(|b| b.is_ascii_digit() || *b == b';'),
                "an escape that is not colour: {:?}",
                String::from_utf8_lossy(line)
            );
            rest = &seq[end + 1..];
        }
        assert!(
            !line.contains(&0xff),
            "a raw invalid byte reached the terminal"
        );
    }
    assert!(text.contains(r#""\x1b[31mred\nline.so""#), "{text}");
    assert!(text.contains(r#""lib\xff\xfe.so""#), "{text}");
    assert!(text.contains(r#""-rf""#), "{text}");
    assert!(text.contains("…(truncated)"), "{text}");
}
