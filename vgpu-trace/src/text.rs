//! Strings that come from traced processes: possibly cut, possibly unreadable, never trusted.
use serde::{Deserialize, Serialize};

/// A string copied out of a traced process or the kernel. Serialised as a plain JSON string
/// when complete, and as `{"value": ..., "truncated": true}` (or `"unreadable"`) otherwise, so
/// a shortened string is never mistaken for the whole one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TextRepr", into = "TextRepr")]
pub struct Text {
    pub value: String,
    /// The original was longer than what was copied.
    pub truncated: bool,
    /// Reading the memory failed; `value` holds what was read before the fault, if anything.
    pub unreadable: bool,
}

impl Text {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    /// Bytes as copied; invalid UTF-8 becomes U+FFFD.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::new(String::from_utf8_lossy(bytes))
    }

    pub fn is_complete(&self) -> bool {
        !self.truncated && !self.unreadable
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
            } => Self {
                value,
                truncated,
                unreadable,
            },
        }
    }
}

impl From<Text> for TextRepr {
    fn from(t: Text) -> Self {
        if t.is_complete() {
            Self::Plain(t.value)
        } else {
            Self::Partial {
                value: t.value,
                truncated: t.truncated,
                unreadable: t.unreadable,
            }
        }
    }
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
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"value":"abc","truncated":true}"#);
        assert_eq!(serde_json::from_str::<Text>(&json).unwrap(), t);
    }
}
