//! Checks: named, pure evaluations of facts, each with a result and a message for people.
//!
//! Prep's checks (`plan::prep`) and a seed's compatibility checks (`seed::compat`) are all of
//! this shape, so they are recorded in `status.checks` and printed by `ibu seed inspect` the
//! same way. Messages name what differs, on both sides.

use crate::status::CheckResult;

/// One evaluated check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: &'static str,
    pub result: CheckResult,
    pub message: String,
}

impl CheckOutcome {
    pub fn new(name: &'static str, ok: bool, message: impl Into<String>) -> CheckOutcome {
        CheckOutcome {
            name,
            result: if ok {
                CheckResult::Passed
            } else {
                CheckResult::Failed
            },
            message: message.into(),
        }
    }

    pub fn passed(name: &'static str, message: impl Into<String>) -> CheckOutcome {
        CheckOutcome::new(name, true, message)
    }

    pub fn failed(name: &'static str, message: impl Into<String>) -> CheckOutcome {
        CheckOutcome::new(name, false, message)
    }

    pub fn warning(name: &'static str, message: impl Into<String>) -> CheckOutcome {
        CheckOutcome {
            name,
            result: CheckResult::Warning,
            message: message.into(),
        }
    }

    pub fn is_failed(&self) -> bool {
        self.result == CheckResult::Failed
    }
}

/// The messages of the failed checks, joined for a condition message.
pub fn failure_message(checks: &[CheckOutcome]) -> Option<String> {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.is_failed())
        .map(|c| c.message.as_str())
        .collect();
    (!failed.is_empty()).then(|| failed.join("; "))
}

pub const CHECK_TARGET_VERSION: &str = "TargetVersion";

/// The seed must be semver-greater than the running OS (LCA's message; "OCP version" means the
/// OS version on an ibu node).
pub fn version_newer(seed: &str, running: Option<&str>) -> CheckOutcome {
    let Some(running) = running else {
        return CheckOutcome::failed(
            CHECK_TARGET_VERSION,
            "cannot tell the running version: the booted commit has no \"version\" metadata",
        );
    };
    let parse = |what: &str, v: &str| {
        semver::Version::parse(v).map_err(|e| format!("failed to parse {what} version {v}: {e}"))
    };
    let (seed_v, running_v) = match (parse("seed", seed), parse("current", running)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return CheckOutcome::failed(CHECK_TARGET_VERSION, e),
    };
    if seed_v <= running_v {
        return CheckOutcome::failed(
            CHECK_TARGET_VERSION,
            format!(
                "seed OCP version ({seed}) must be higher than current OCP version ({running})"
            ),
        );
    }
    CheckOutcome::passed(
        CHECK_TARGET_VERSION,
        format!("seed version {seed} is newer than the running {running}"),
    )
}

/// Bytes plus a head-room of `percent`.
pub fn with_margin(bytes: u64, percent: u64) -> u64 {
    bytes.saturating_add(bytes.saturating_mul(percent) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comparison_is_semver() {
        for (seed, running, ok, fragment) in [
            ("1.1.0", Some("1.0.0"), true, "newer"),
            ("1.10.0", Some("1.9.0"), true, "newer"),
            ("1.0.0", Some("1.0.0"), false, "must be higher"),
            ("4.16.0-rc.1", Some("4.16.0"), false, "must be higher"),
            ("x", Some("1.0.0"), false, "failed to parse seed version x"),
            (
                "1.1.0",
                Some("abc"),
                false,
                "failed to parse current version abc",
            ),
            ("1.1.0", None, false, "no \"version\" metadata"),
        ] {
            let c = version_newer(seed, running);
            assert_eq!(c.result == CheckResult::Passed, ok, "{seed} vs {running:?}");
            assert!(c.message.contains(fragment), "{}", c.message);
        }
    }

    #[test]
    fn failure_messages_join_only_failures() {
        let cs = [
            CheckOutcome::passed("A", "fine"),
            CheckOutcome::failed("B", "bad b"),
            CheckOutcome::warning("C", "meh"),
            CheckOutcome::failed("D", "bad d"),
        ];
        assert_eq!(failure_message(&cs).as_deref(), Some("bad b; bad d"));
        assert_eq!(failure_message(&cs[..1]), None);
    }
}
