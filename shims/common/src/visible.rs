//! `CUDA_VISIBLE_DEVICES`, with the CUDA driver's semantics. NVML ignores the variable; only the
//! CUDA shim applies the result.

use crate::uuid::Uuid;

/// The physical devices CUDA shows, in CUDA ordinal order, for the value `spec` of
/// `CUDA_VISIBLE_DEVICES` on a machine whose devices have `uuids`.
///
/// Unset means every device. Otherwise the comma-separated entries are device indices or
/// `GPU-` UUIDs, where any prefix that matches exactly one device will do. Reading stops at the
/// first entry that is empty, malformed, unknown, ambiguous or repeated; the devices before it
/// stay visible. So `""` and `"-1"` hide every device, and `"0,9,1"` on two devices shows only 0.
pub fn visible_devices(spec: Option<&str>, uuids: &[Uuid]) -> Vec<usize> {
    let Some(spec) = spec else {
        return (0..uuids.len()).collect();
    };
    let mut visible = Vec::new();
    for entry in spec.split(',') {
        match resolve(entry.trim(), uuids) {
            Some(index) if !visible.contains(&index) => visible.push(index),
            _ => break,
        }
    }
    visible
}

/// The physical index one entry names, if it names exactly one device.
fn resolve(entry: &str, uuids: &[Uuid]) -> Option<usize> {
    if !entry.is_empty() && entry.bytes().all(|c| c.is_ascii_digit()) {
        return entry.parse().ok().filter(|&index| index < uuids.len());
    }
    let prefix = entry
        .strip_prefix("GPU-")
        .filter(|hex| !hex.is_empty())?
        .to_ascii_lowercase();
    let mut matches = uuids
        .iter()
        .enumerate()
        .filter(|(_, uuid)| uuid.canonical().starts_with(&prefix));
    let (index, _) = matches.next()?;
    matches.next().is_none().then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(count: usize) -> Vec<Uuid> {
        (0..count).map(Uuid::default_for).collect()
    }

    fn visible(spec: Option<&str>, count: usize) -> Vec<usize> {
        visible_devices(spec, &machine(count))
    }

    #[test]
    fn unset_shows_every_device() {
        assert_eq!(visible(None, 3), [0, 1, 2]);
        assert_eq!(visible(None, 0), [] as [usize; 0]);
    }

    #[test]
    fn empty_or_minus_one_hides_every_device() {
        assert!(visible(Some(""), 2).is_empty());
        assert!(visible(Some("-1"), 2).is_empty());
        assert!(visible(Some(" "), 2).is_empty());
    }

    #[test]
    fn indices_keep_the_given_order() {
        assert_eq!(visible(Some("1,0"), 2), [1, 0]);
        assert_eq!(visible(Some(" 1 , 0 "), 2), [1, 0]);
        assert_eq!(visible(Some("01"), 2), [1]);
    }

    #[test]
    fn reading_stops_at_the_first_invalid_entry() {
        assert_eq!(visible(Some("0,9,1"), 2), [0]);
        assert_eq!(visible(Some("1,-1,0"), 2), [1]);
        assert_eq!(visible(Some("1,,0"), 2), [1]);
        assert_eq!(visible(Some("0,x"), 2), [0]);
        assert_eq!(visible(Some("9"), 2), [] as [usize; 0]);
    }

    #[test]
    fn duplicates_stop_reading() {
        assert_eq!(visible(Some("0,0,1"), 2), [0]);
        assert_eq!(
            visible(Some("1,GPU-7a3c0000-0000-4000-8000-000000000001,0"), 2),
            [1]
        );
    }

    #[test]
    fn uuids_and_unique_prefixes_select_devices() {
        let full = "GPU-7a3c0000-0000-4000-8000-000000000001";
        assert_eq!(visible(Some(full), 2), [1]);
        assert_eq!(visible(Some(&full.to_ascii_uppercase()), 2), [1]);
        let mut uuids = machine(2);
        uuids.push(Uuid::parse("GPU-deadbeef-0000-4000-8000-000000000000").unwrap_or(uuids[0]));
        assert_eq!(visible_devices(Some("GPU-dead,0"), &uuids), [2, 0]);
        assert_eq!(visible_devices(Some("GPU-DEAD"), &uuids), [2]);
    }

    #[test]
    fn ambiguous_or_unknown_prefixes_stop_reading() {
        assert_eq!(visible(Some("1,GPU-7a3c"), 2), [1]);
        assert_eq!(
            visible(Some("GPU-7a3c"), 1),
            [0],
            "a prefix is fine when only one device matches"
        );
        assert_eq!(visible(Some("0,GPU-ffff"), 2), [0]);
        assert_eq!(visible(Some("GPU-"), 1), [] as [usize; 0]);
        assert_eq!(visible(Some("MIG-7a3c0000"), 1), [] as [usize; 0]);
    }
}
