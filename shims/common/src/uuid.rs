//! GPU UUIDs: 16 bytes, written `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` as NVML and
//! `CUDA_VISIBLE_DEVICES` spell them.

use std::fmt::{self, Write};

/// Offsets of the dashes in the 36-character canonical form.
const DASHES: [usize; 4] = [8, 13, 18, 23];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid([u8; 16]);

impl Uuid {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub const fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The UUID of device `index` when `VGPU_DEVICE_UUIDS` does not name one:
    /// `GPU-7a3c0000-0000-4000-8000-<index as 12 hex digits>`, stable across runs.
    pub fn default_for(index: usize) -> Self {
        let mut bytes = [0x7a, 0x3c, 0, 0, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0];
        let index = u64::try_from(index).unwrap_or(u64::MAX).to_be_bytes();
        bytes[10..].copy_from_slice(&index[2..]);
        Self(bytes)
    }

    /// Parses `GPU-` followed by the canonical 8-4-4-4-12 hex form (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let canonical = text.strip_prefix("GPU-")?.as_bytes();
        if canonical.len() != 36 || DASHES.iter().any(|&at| canonical.get(at) != Some(&b'-')) {
            return None;
        }
        let mut digits = canonical.iter().filter(|&&c| c != b'-');
        let mut bytes = [0_u8; 16];
        for byte in &mut bytes {
            let high = hex_value(*digits.next()?)?;
            let low = hex_value(*digits.next()?)?;
            *byte = high << 4 | low;
        }
        digits.next().is_none().then_some(Self(bytes))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

impl Uuid {
    /// The 36-character 8-4-4-4-12 lowercase hex form, without the `GPU-` prefix.
    pub fn canonical(&self) -> String {
        let mut text = String::with_capacity(36);
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                text.push('-');
            }
            // Writing to a String cannot fail.
            let _ = write!(text, "{byte:02x}");
        }
        text
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GPU-{}", self.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_deterministic_and_distinct() {
        assert_eq!(
            Uuid::default_for(0).to_string(),
            "GPU-7a3c0000-0000-4000-8000-000000000000"
        );
        assert_eq!(
            Uuid::default_for(3).to_string(),
            "GPU-7a3c0000-0000-4000-8000-000000000003"
        );
        assert_eq!(
            Uuid::default_for(26).to_string(),
            "GPU-7a3c0000-0000-4000-8000-00000000001a"
        );
    }

    #[test]
    fn parse_round_trips() {
        let text = "GPU-0123abcd-4567-89ef-0123-456789abcdef";
        assert_eq!(
            Uuid::parse(text).map(|u| u.to_string()).as_deref(),
            Some(text)
        );
        let upper = "GPU-0123ABCD-4567-89EF-0123-456789ABCDEF";
        assert_eq!(Uuid::parse(upper), Uuid::parse(text));
    }

    #[test]
    fn parse_rejects_malformed_text() {
        for bad in [
            "",
            "GPU-",
            "0123abcd-4567-89ef-0123-456789abcdef",
            "MIG-0123abcd-4567-89ef-0123-456789abcdef",
            "GPU-0123abcd-4567-89ef-0123-456789abcde",
            "GPU-0123abcd-4567-89ef-0123-456789abcdeff",
            "GPU-0123abcd44567-89ef-0123-456789abcdef",
            "GPU-0123abcg-4567-89ef-0123-456789abcdef",
            "GPU-0123abcd-4567-89ef-0123-456789abcdé",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad:?}");
        }
    }
}
