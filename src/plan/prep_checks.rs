//! Prep's host checks: pure functions of the desired state and the facts, evaluated by the
//! planner before anything heavy happens, each recorded in `status.checks`.

use anyhow::Result;

use crate::checks::{self, CHECK_TARGET_VERSION, CheckOutcome};
use crate::facts::Observe;
use crate::humanize;
use crate::spec::Desired;

/// Head-room added to the space estimates of the free-space checks.
pub const FREE_SPACE_MARGIN_PERCENT: u64 = 10;

pub const CHECK_CONTAINER_STORAGE: &str = "ContainerStorageMount";
pub const CHECK_FREE_SPACE_SYSROOT: &str = "FreeSpaceSysroot";
pub const CHECK_FREE_SPACE_BOOT: &str = "FreeSpaceBoot";
pub const CHECK_IMAGE_CLEANUP: &str = "ImageCleanup";

fn with_margin(bytes: u64) -> u64 {
    checks::with_margin(bytes, FREE_SPACE_MARGIN_PERCENT)
}

/// Prep's checks before anything heavy (LCA §4 steps 2–3, plus free space, which LCA lacks).
///
/// Free-space estimate: a seed of the same OS is about the size of the running OS, so the new
/// stateroot needs about the running deployment's size in `/sysroot` and its kernel and
/// initramfs in `/boot`, each plus [`FREE_SPACE_MARGIN_PERCENT`]. (Once the seed's labels are
/// read, Prep re-checks with the seed's own sizes.)
pub fn prep_checks(desired: &Desired, facts: &dyn Observe) -> Result<Vec<CheckOutcome>> {
    let mut out = Vec::new();

    let storage = facts.storage()?;
    out.push(match &storage.container_storage {
        Some(m) => CheckOutcome::new(
            CHECK_CONTAINER_STORAGE,
            true,
            format!(
                "{} is its own mount ({} on {})",
                m.mount_point.display(),
                m.fs_type,
                m.source
            ),
        ),
        None => CheckOutcome::new(
            CHECK_CONTAINER_STORAGE,
            false,
            "container storage mountpoint target not found",
        ),
    });

    let running = facts.ostree()?.running_version().map(str::to_string);
    out.push(version_check(desired, running.as_deref()));

    let fp = facts.footprint()?;
    for (name, what, usage, need, basis) in [
        (
            CHECK_FREE_SPACE_SYSROOT,
            "/sysroot",
            storage.sysroot,
            with_margin(fp.deployment_bytes),
            "the running deployment",
        ),
        (
            CHECK_FREE_SPACE_BOOT,
            "/boot",
            storage.boot,
            with_margin(fp.boot_bytes),
            "the running kernel and initramfs",
        ),
    ] {
        let avail = usage.available_bytes();
        let detail = format!(
            "{} available, {} needed (size of {basis} + {FREE_SPACE_MARGIN_PERCENT}%)",
            humanize::bytes(avail),
            humanize::bytes(need)
        );
        out.push(if avail >= need {
            CheckOutcome::new(name, true, format!("{what}: {detail}"))
        } else {
            CheckOutcome::new(
                name,
                false,
                format!("not enough free space on {what}: {detail}"),
            )
        });
    }
    Ok(out)
}

/// The seed must be semver-greater than the running OS.
fn version_check(desired: &Desired, running: Option<&str>) -> CheckOutcome {
    match &desired.seed {
        Some(seed) => checks::version_newer(&seed.version, running),
        None => CheckOutcome::failed(
            CHECK_TARGET_VERSION,
            "spec.seedImageRef.version is required for Prep",
        ),
    }
}
