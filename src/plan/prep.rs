//! Planning the Prep stage: checks first, then image cleanup, then the stateroot.
//!
//! The checks are pure functions of facts, so the planner evaluates them itself and records each
//! in `status.checks`; a failing check fails Prep with LCA's message before anything heavy runs.
//! Each finished step leaves a marker in `progress`, so a restarted ibu (crash, reboot) resumes
//! at the first step not yet done instead of failing Prep as LCA does.

use anyhow::Result;

use super::{Decision, Outcome, Pass, STEP_IMAGE_CLEANUP, STEP_PREP_CHECKS, Step};
use crate::checks::{self, CHECK_TARGET_VERSION, CheckOutcome};
use crate::facts::Observe;
use crate::humanize;
use crate::spec::{Desired, Stage};
use crate::status::CheckResult;
use crate::status::conditions::Ctx;
use crate::status::store::Recorded;

/// Head-room added to the space estimates of the free-space checks.
pub const FREE_SPACE_MARGIN_PERCENT: u64 = 10;

/// The steps of Prep implemented so far, in order.
const PREP_STEPS: [&str; 2] = [STEP_PREP_CHECKS, STEP_IMAGE_CLEANUP];

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

/// The next thing to do in Prep.
pub(super) fn next(pass: &mut Pass<'_>) -> Result<(Decision, Vec<&'static str>)> {
    let stage = Stage::Prep;
    let upcoming = |after: &str| -> Vec<&'static str> {
        PREP_STEPS
            .iter()
            .skip_while(|s| **s != after)
            .skip(1)
            .copied()
            .collect()
    };

    if !pass.rec.progress.is_done(stage, STEP_PREP_CHECKS) {
        let checks = prep_checks(pass.desired, pass.facts)?;
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.result == CheckResult::Failed)
            .map(|c| c.message.as_str())
            .collect();
        let msg = failed.join("; ");
        for c in &checks {
            pass.record_check(c.name, c.result, c.message.clone());
        }
        if !failed.is_empty() {
            pass.rec.status.set_prep_failed(pass.cx, &msg);
            return Ok((
                Decision::Blocked {
                    reason: format!("Prep failed: {msg}"),
                },
                vec![],
            ));
        }
        pass.rec.progress.mark_done(stage, STEP_PREP_CHECKS);
    }

    if !pass.rec.progress.is_done(stage, STEP_IMAGE_CLEANUP) {
        let cleanup = &pass.desired.image_cleanup;
        if !cleanup.on_prep {
            pass.record_check(
                CHECK_IMAGE_CLEANUP,
                CheckResult::Skipped,
                "disabled by annotation image-cleanup.lca.openshift.io/on-prep: Disabled".into(),
            );
        } else {
            let storage = pass.facts.storage()?;
            let usage = storage
                .container_storage
                .as_ref()
                .map(|m| m.usage)
                .unwrap_or_default();
            let threshold = cleanup.disk_usage_threshold_percent;
            if crate::images::cleanup::needed(&usage, cleanup) {
                return Ok((
                    Decision::Run(Step::ImageCleanup {
                        threshold_percent: threshold,
                    }),
                    upcoming(STEP_IMAGE_CLEANUP),
                ));
            }
            pass.record_check(
                CHECK_IMAGE_CLEANUP,
                CheckResult::Skipped,
                format!(
                    "container storage at {}%, not above the {threshold}% threshold",
                    usage.used_percent()
                ),
            );
        }
        pass.rec.progress.mark_done(stage, STEP_IMAGE_CLEANUP);
    }

    Ok((
        Decision::Blocked {
            reason: "Prep cannot continue: setting up the new stateroot from the seed image is \
                     not implemented in this version of ibu"
                .into(),
        },
        vec![],
    ))
}

/// Image cleanup never fails Prep: a failure is recorded as a warning and Prep moves on.
pub(super) fn record_image_cleanup(rec: &mut Recorded, cx: Ctx, outcome: &Outcome) {
    let (result, message) = match outcome {
        Outcome::Succeeded { message } => (CheckResult::Passed, message.clone()),
        Outcome::Warning { message } => (CheckResult::Warning, message.clone()),
        Outcome::Failed { message } => (
            CheckResult::Warning,
            format!("image cleanup failed, continuing without it: {message}"),
        ),
    };
    let checks = &mut rec.status.checks;
    checks.retain(|c| c.name != CHECK_IMAGE_CLEANUP);
    checks.push(crate::status::Check {
        name: CHECK_IMAGE_CLEANUP.into(),
        result,
        message,
        time: cx.now,
    });
    rec.progress.mark_done(Stage::Prep, STEP_IMAGE_CLEANUP);
}
