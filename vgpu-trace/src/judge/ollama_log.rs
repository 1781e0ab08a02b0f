//! Ollama's own log lines, recognised: what it says it concluded from the libraries. Ollama
//! logs with Go's `slog` text handler, one line per record:
//! `time=… level=INFO source=types.go:42 msg="inference compute" id=0 library=CUDA …`.
//! Only the lines that explain discovery's outcome are recognised; the rest stay plain text.
use crate::model::{LogLine, OllamaSays, Stream};
use crate::text::Text;

/// A line of a process's output or of a log, as the timeline holds it: a trailing CR dropped,
/// the bytes kept exactly, and what it says if it is one of Ollama's lines.
pub fn log_line(stream: Stream, bytes: &[u8], truncated: bool) -> LogLine {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut text = Text::from_bytes(bytes);
    text.truncated = truncated;
    let ollama = recognise(&text.value);
    LogLine {
        stream,
        text,
        ollama,
    }
}

/// A parsed `slog` text line: its message and attributes, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub msg: String,
    pub attrs: Vec<(String, String)>,
}

impl Record {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `key=value key="quoted \"value\"" …`; none unless the line has a `msg`.
pub fn parse_slog(line: &str) -> Option<Record> {
    let mut record = Record::default();
    let mut rest = line.trim();
    let mut has_msg = false;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = &rest[..eq];
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            out.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end?;
            value = out;
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start();
        if key == "msg" {
            record.msg = value;
            has_msg = true;
        } else {
            record.attrs.push((key.to_string(), value));
        }
    }
    has_msg.then_some(record)
}

/// What the bundled ggml prints when its CUDA backend fails, before any slog line.
const GGML_FAILURES: [&str; 3] = [
    "load_backend: failed to load ",
    "ggml_cuda_init: failed to initialize CUDA: ",
    "ggml_cuda_init: device ",
];

/// What a line of Ollama's log says, if it is one that explains discovery.
pub fn recognise(line: &str) -> Option<OllamaSays> {
    let trimmed = line.trim();
    if GGML_FAILURES.iter().any(|p| trimmed.starts_with(p))
        && (!trimmed.starts_with("ggml_cuda_init: device ") || trimmed.contains("failed"))
    {
        return Some(OllamaSays::BackendFailed {
            reason: trimmed.to_string(),
        });
    }
    let record = parse_slog(line)?;
    let attr = |key: &str| record.get(key).map(str::to_string);
    let msg = record.msg.as_str();
    let with = |what: &str, keys: &[&str]| {
        let details: Vec<String> = keys
            .iter()
            .filter_map(|k| Some(format!("{k}={}", record.get(k)?)))
            .collect();
        if details.is_empty() {
            what.to_string()
        } else {
            format!("{what} ({})", details.join(" "))
        }
    };
    Some(match msg {
        "discovering available GPUs..." | "looking for compatible GPUs" => OllamaSays::Discovering,
        "inference compute" => OllamaSays::InferenceCompute {
            library: attr("library")?,
            compute: attr("compute"),
            description: attr("description").or_else(|| attr("name")),
            libdirs: attr("libdirs"),
        },
        "no compatible GPUs were discovered" => OllamaSays::NoGpus,
        m if m.starts_with("skipping CUDA device")
            || m == "NVIDIA driver too old"
            || m.starts_with("CUDA GPU is too old")
            || m == "filtering device which didn't fully initialize"
            || m.starts_with("insufficient VRAM") =>
        {
            OllamaSays::DeviceDropped {
                reason: with(
                    m,
                    &[
                        "device",
                        "compute",
                        "driver",
                        "required_driver",
                        "id",
                        "error",
                    ],
                ),
            }
        }
        "could not verify NVIDIA driver compatibility for CUDA" => OllamaSays::DriverUnverified,
        m if m.starts_with("Unable to load")
            || m.starts_with("unable to load cuda driver library") =>
        {
            OllamaSays::DriverNotLoaded {
                reason: with(m, &["library", "error"]),
            }
        }
        m if m.starts_with("failure during")
            || m.contains("timed out")
            || m.contains("before timeout")
            || m.starts_with("llama-server discovery: system_info line not found") =>
        {
            OllamaSays::DiscoveryFailed {
                reason: with(m, &["error"]),
            }
        }
        "starting runner" | "starting llama-server" | "starting ollama engine" => {
            OllamaSays::RunnerStarting { cmd: attr("cmd") }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slog_text_lines_parse_with_quotes_and_escapes() {
        let r = parse_slog(
            r#"time=2026-11-30T15:07:07.338Z level=INFO source=types.go:42 msg="inference compute" id=GPU-501a filter_id="" library=CUDA description="NVIDIA \"H200\"" total="140.4 GiB""#,
        )
        .unwrap();
        assert_eq!(r.msg, "inference compute");
        assert_eq!(r.get("library"), Some("CUDA"));
        assert_eq!(r.get("filter_id"), Some(""));
        assert_eq!(r.get("description"), Some("NVIDIA \"H200\""));
        assert_eq!(r.get("total"), Some("140.4 GiB"));
        assert_eq!(parse_slog("ggml_cuda_init: found 1 CUDA devices:"), None);
        assert_eq!(parse_slog(r#"msg="unterminated"#), None);
        assert_eq!(parse_slog(""), None);
    }

    #[test]
    fn the_lines_that_explain_discovery_are_recognised() {
        let gpu = recognise(
            r#"time=x level=INFO source=types.go:42 msg="inference compute" id=0 filter_id="" library=CUDA compute=9.0 name=CUDA0 description="NVIDIA H200" libdirs=ollama,cuda_v12 driver=13.0"#,
        );
        assert_eq!(
            gpu,
            Some(OllamaSays::InferenceCompute {
                library: "CUDA".into(),
                compute: Some("9.0".into()),
                description: Some("NVIDIA H200".into()),
                libdirs: Some("ollama,cuda_v12".into()),
            })
        );
        let cpu = recognise(
            r#"time=x level=INFO source=types.go:60 msg="inference compute" id=cpu library=cpu compute="" name=cpu"#,
        )
        .unwrap();
        assert!(cpu.summary().starts_with("inference compute library=cpu"));
        let skipped = recognise(
            r#"time=x level=INFO source=cuda_compat.go:61 msg="skipping CUDA device — compute capability not in compiled architectures" device=CUDA0 compute=3.5"#,
        )
        .unwrap();
        assert_eq!(
            skipped,
            OllamaSays::DeviceDropped {
                reason: "skipping CUDA device — compute capability not in compiled architectures \
                         (device=CUDA0 compute=3.5)"
                    .into()
            }
        );
        assert_eq!(
            recognise(
                r#"time=x level=INFO source=runner.go:67 msg="discovering available GPUs...""#
            ),
            Some(OllamaSays::Discovering)
        );
        assert!(matches!(
            recognise(r#"time=x level=INFO source=gpu.go:568 msg="Unable to load nvcuda" library=/x/libcuda.so.1 error="symbol lookup""#),
            Some(OllamaSays::DriverNotLoaded { reason }) if reason.contains("library=/x/libcuda.so.1")
        ));
        assert!(matches!(
            recognise(
                r#"time=x level=WARN source=runner.go:562 msg="llama-server GPU discovery watchdog timed out""#
            ),
            Some(OllamaSays::DiscoveryFailed { .. })
        ));
        assert_eq!(
            recognise(r#"time=x level=INFO source=routes.go:1 msg="Listening on 127.0.0.1:11434""#),
            None
        );
        assert_eq!(
            recognise(
                r#"time=x level=WARN source=cuda_compat.go:70 msg="could not verify NVIDIA driver compatibility for CUDA""#
            ),
            Some(OllamaSays::DriverUnverified)
        );
    }

    #[test]
    fn ggml_s_own_failure_lines_are_recognised() {
        for line in [
            "load_backend: failed to load /usr/lib/ollama/cuda_v12/libggml-cuda.so: libcuda.so.1: cannot open shared object file",
            "ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version",
            "ggml_cuda_init: device 0 failed to initialize: out of memory",
        ] {
            assert_eq!(
                recognise(line),
                Some(OllamaSays::BackendFailed {
                    reason: line.to_string()
                }),
                "{line}"
            );
        }
        assert_eq!(recognise("ggml_cuda_init: found 1 CUDA devices:"), None);
        assert_eq!(
            recognise("load_backend: loaded CUDA backend from /x.so"),
            None
        );
    }
}
