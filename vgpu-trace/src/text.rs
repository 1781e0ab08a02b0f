//! Strings that come from traced processes: possibly cut, possibly unreadable, never trusted.
use serde::{Deserialize, Serialize};

/// A string copied out of a traced process or the kernel. Serialised as a plain JSON string
/// when complete, and as `{"value": ..., "truncated": true}` (or `"unreadable"`) otherwise, so
/// a shortened string is never mistaken for the whole one. Bytes that are not UTF-8 (file
/// names need not be) are kept exactly too: `value` shows them as U+FFFD and `hex` holds
/// every byte.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TextRepr", into = "TextRepr")]
pub struct Text {
    pub value: String,
    /// The original was longer than what was copied.
    pub truncated: bool,
    /// Reading the memory failed; `value` holds what was read before the fault, if anything.
    pub unreadable: bool,
    /// The bytes as copied, when they are not valid UTF-8 (`value` is then lossy).
    pub bytes: Option<Vec<u8>>,
}

impl Text {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    /// Bytes as copied; invalid UTF-8 becomes U+FFFD in `value`, and the bytes are kept.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::new(s),
            Err(_) => Self {
                value: String::from_utf8_lossy(bytes).into_owned(),
                bytes: Some(bytes.to_vec()),
                ..Self::default()
            },
        }
    }

    pub fn is_complete(&self) -> bool {
        !self.truncated && !self.unreadable
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or(self.value.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TextRepr {
    Plain(String),
    Partial {
        value: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unreadable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hex: Option<String>,
    },
}

impl From<TextRepr> for Text {
    fn from(r: TextRepr) -> Self {
        match r {
            TextRepr::Plain(value) => Self::new(value),
            TextRepr::Partial {
                value,
                truncated,
                unreadable,
                hex,
            } => Self {
                // A record with a malformed `hex` still reads: `value` stands.
                bytes: hex.as_deref().and_then(from_hex),
                value,
                truncated,
                unreadable,
            },
        }
    }
}

impl From<Text> for TextRepr {
    fn from(t: Text) -> Self {
        if t.is_complete() && t.bytes.is_none() {
            Self::Plain(t.value)
        } else {
            Self::Partial {
                value: t.value,
                truncated: t.truncated,
                unreadable: t.unreadable,
                hex: t.bytes.as_deref().map(to_hex),
            }
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_text_is_a_plain_json_string() {
        let json = serde_json::to_string(&Text::new("libm.so.6")).unwrap();
        assert_eq!(json, r#""libm.so.6""#);
        assert_eq!(
            serde_json::from_str::<Text>(&json).unwrap(),
            Text::new("libm.so.6")
        );
    }

    #[test]
    fn cut_text_says_so() {
        let t = Text {
            value: "abc".into(),
            truncated: true,
            unreadable: false,
            bytes: None,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"value":"abc","truncated":true}"#);
        assert_eq!(serde_json::from_str::<Text>(&json).unwrap(), t);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_exactly() {
        let t = Text::from_bytes(b"lib\xff\xfe.so");
        assert_eq!(t.value, "lib\u{fffd}\u{fffd}.so");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            "{\"value\":\"lib\u{fffd}\u{fffd}.so\",\"hex\":\"6c6962fffe2e736f\"}"
        );
        let back: Text = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_bytes(), b"lib\xff\xfe.so");
        assert_eq!(back, t);
        // Escapes and newlines are UTF-8: a plain, escaped JSON string.
        let esc = Text::from_bytes(b"\x1b[31m\n.so");
        assert_eq!(serde_json::to_string(&esc).unwrap(), r#""\u001b[31m\n.so""#);
        // A malformed hex is dropped, not fatal.
        let bad: Text = serde_json::from_str(r#"{"value":"x","hex":"zz"}"#).unwrap();
        assert_eq!(bad.as_bytes(), b"x");
    }
}
