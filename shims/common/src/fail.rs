//! `VGPU_FAIL`: make chosen exported functions fail or hang, by their exported names.
//!
//! Syntax: a comma-separated list of `symbol=action`, where the action is a decimal status
//! code, a CUDA or NVML enumerator name (`CUDA_ERROR_NO_DEVICE`, `NVML_ERROR_DRIVER_NOT_LOADED`,
//! ...) or `hang` (the call never returns, as when a discovery child times out). When a symbol
//! is listed twice the last entry wins.
//! Example: `cuInit=100,nvmlInit_v2=NVML_ERROR_DRIVER_NOT_LOADED`.

use crate::codes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    /// Return this status code without doing anything else.
    Return(u32),
    /// Block the calling thread forever.
    Hang,
}

/// The parsed `VGPU_FAIL` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailPlan {
    rules: Vec<(String, FailAction)>,
}

impl FailPlan {
    /// Parses `spec`; entries that make no sense are skipped with a line in `warnings`.
    pub fn parse(spec: &str, warnings: &mut Vec<String>) -> Self {
        let mut rules = Vec::new();
        for entry in spec
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let parsed = entry
                .split_once('=')
                .map(|(symbol, action)| (symbol.trim(), action.trim()))
                .filter(|(symbol, _)| !symbol.is_empty());
            let Some((symbol, action)) = parsed else {
                warnings.push(format!(
                    "ignoring VGPU_FAIL entry {entry:?}: expected symbol=code"
                ));
                continue;
            };
            match parse_action(action) {
                Some(action) => rules.push((symbol.to_owned(), action)),
                None => {
                    let expected = "a number, a CUDA/NVML status name or \"hang\"";
                    warnings.push(format!(
                        "ignoring VGPU_FAIL entry {entry:?}: {action:?} is not {expected}"
                    ));
                }
            }
        }
        Self { rules }
    }

    /// What `symbol` must do instead of its work, if anything.
    pub fn action_for(&self, symbol: &str) -> Option<FailAction> {
        self.rules
            .iter()
            .rev()
            .find(|(name, _)| name == symbol)
            .map(|&(_, action)| action)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn parse_action(text: &str) -> Option<FailAction> {
    if text.eq_ignore_ascii_case("hang") {
        return Some(FailAction::Hang);
    }
    let code = if text.bytes().all(|c| c.is_ascii_digit()) {
        text.parse().ok()
    } else {
        codes::value_of(text)
    };
    code.map(FailAction::Return)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> (FailPlan, Vec<String>) {
        let mut warnings = Vec::new();
        let plan = FailPlan::parse(spec, &mut warnings);
        (plan, warnings)
    }

    #[test]
    fn numbers_names_and_hang() {
        let (plan, warnings) = parse(
            "cuInit=100, nvmlInit_v2=NVML_ERROR_DRIVER_NOT_LOADED,cuMemGetInfo_v2=hang,\
             cuDeviceGet=CUDA_ERROR_INVALID_DEVICE",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(plan.action_for("cuInit"), Some(FailAction::Return(100)));
        assert_eq!(plan.action_for("nvmlInit_v2"), Some(FailAction::Return(9)));
        assert_eq!(plan.action_for("cuMemGetInfo_v2"), Some(FailAction::Hang));
        assert_eq!(
            plan.action_for("cuDeviceGet"),
            Some(FailAction::Return(101))
        );
        assert_eq!(plan.action_for("cuDeviceGetCount"), None);
        assert_eq!(
            plan.action_for("cuinit"),
            None,
            "symbols are case-sensitive"
        );
    }

    #[test]
    fn empty_spec_and_empty_entries_are_fine() {
        for spec in ["", " ", ",,", "cuInit=3,"] {
            let (_, warnings) = parse(spec);
            assert!(warnings.is_empty(), "{spec:?}: {warnings:?}");
        }
        assert!(parse("").0.is_empty());
    }

    #[test]
    fn last_entry_for_a_symbol_wins() {
        let (plan, _) = parse("cuInit=1,cuInit=hang");
        assert_eq!(plan.action_for("cuInit"), Some(FailAction::Hang));
    }

    #[test]
    fn garbage_is_skipped_with_a_warning() {
        let (plan, warnings) = parse(
            "cuInit,=3,cuDeviceGet=-1,cuCtxCreate_v3=CUDA_ERROR_BOGUS,\
             cuMemCreate=4294967296,nvmlShutdown=2",
        );
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        assert!(warnings[0].contains("\"cuInit\""));
        assert_eq!(plan.action_for("cuInit"), None);
        assert_eq!(plan.action_for("cuDeviceGet"), None);
        assert_eq!(plan.action_for("cuMemCreate"), None);
        assert_eq!(plan.action_for("nvmlShutdown"), Some(FailAction::Return(2)));
    }
}
