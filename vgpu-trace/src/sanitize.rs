//! Making strings from traced processes safe for a terminal: no escape sequence, control
//! character or bidi override in a file name can reach the user's screen.

/// Writes `s` as a double-quoted string with every unsafe character escaped.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    push_escaped(&mut out, s);
    out.push('"');
    out
}

/// Like [`quoted`], for bytes that need not be UTF-8: a byte that is not shows as `\xNN`.
pub fn quoted_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// `s` with unsafe characters escaped, unquoted (for names that are usually plain).
pub fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s);
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_bidi_control(c) => {
                let v = c as u32;
                if v <= 0xff {
                    out.push_str(&format!("\\x{v:02x}"));
                } else {
                    out.push_str(&format!("\\u{{{v:x}}}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(quoted("a\x1b[31mb"), r#""a\x1b[31mb""#);
        assert_eq!(quoted("x\u{9b}y"), r#""x\x9by""#);
        assert_eq!(quoted("rtl\u{202E}gpj.so"), r#""rtl\u{202e}gpj.so""#);
        assert_eq!(quoted("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(plain("libcuda.so.1"), "libcuda.so.1");
        assert_eq!(plain("ok ünïcode"), "ok ünïcode");
        assert_eq!(quoted_bytes(b"a\xffb\x1b\n"), r#""a\xffb\x1b\n""#);
    }
}
