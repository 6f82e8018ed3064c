//! Planning the Prep stage: a convergent sequence of steps, each resumable.
//!
//! | # | step | kind | on failure |
//! |---|---|---|---|
//! | 1 | `PrepChecks` | pure: container storage mount, newer version, free space | Prep failed |
//! | 2 | `InspectSeed` | reads the seed's config (labels) without pulling | Prep failed |
//! | 3 | `SeedChecks` | pure: format, version, arch, CPUs, IP family, proxy, FIPS, storage target, space | Prep failed |
//! | 4 | `ImageCleanup` | LCA's cleanup when above the threshold | warning only |
//! | 5 | `FetchSeedMeta` | the seed's metadata layer into the workspace | Prep failed |
//! | 6 | `ImportOstree` | only the missing ostree objects; the commit imported | Prep failed |
//! | 7 | `DeployStateroot` | `os-init` + deploy, not default, `ibu=<version>` karg | Prep failed |
//! | 8 | `RestoreVar` | the seed's `/var` into the new stateroot | Prep failed |
//! | 9 | `RestoreEtc` | the seed's `/etc` changes and deletions into the new deployment | Prep failed |
//! | 10 | `Precache` | pull missing images, skip present ones | Prep failed if any pull failed |
//!
//! Every finished step leaves a marker in `progress`; the planner picks the first step without
//! one, so a killed ibu or a reboot continues where it stopped (LCA fails Prep instead). Steps
//! 5–10 are idempotent on their own (objects already in the repository skipped, layers
//! re-extracted, a deployment found by its `ibu=` argument, present images skipped), so a crash
//! inside a step is harmless too.
//! Phases `Stateroot` (5–9) and `Precache` (10) are timed in `status.history` as LCA does.

use anyhow::Result;

use super::prep_checks::{CHECK_IMAGE_CLEANUP, prep_checks};
use super::{
    Decision, Outcome, Pass, STEP_DEPLOY_STATEROOT, STEP_FETCH_SEED_META, STEP_IMAGE_CLEANUP,
    STEP_IMPORT_OSTREE, STEP_INSPECT_SEED, STEP_PRECACHE, STEP_PREP_CHECKS, STEP_RESTORE_ETC,
    STEP_RESTORE_VAR, STEP_SEED_CHECKS, Step, StepData,
};
use crate::checks::{self, CheckOutcome};
use crate::seed::compat::{self, Host};
use crate::spec::Stage;
use crate::status::conditions::Ctx;
use crate::status::history::{PHASE_PRECACHE, PHASE_STATEROOT};
use crate::status::store::{Recorded, Target};
use crate::status::{Check, CheckResult};

/// Prep's steps, in order.
pub const PREP_STEPS: [&str; 10] = [
    STEP_PREP_CHECKS,
    STEP_INSPECT_SEED,
    STEP_SEED_CHECKS,
    STEP_IMAGE_CLEANUP,
    STEP_FETCH_SEED_META,
    STEP_IMPORT_OSTREE,
    STEP_DEPLOY_STATEROOT,
    STEP_RESTORE_VAR,
    STEP_RESTORE_ETC,
    STEP_PRECACHE,
];

pub const PREP_COMPLETED_MESSAGE: &str = "Prep stage completed successfully";

fn upcoming(after: &str) -> Vec<&'static str> {
    PREP_STEPS
        .iter()
        .skip_while(|s| **s != after)
        .skip(1)
        .copied()
        .collect()
}

/// The seed reference pinned to the digest read by `InspectSeed`.
pub fn pinned_image(target: &Target) -> String {
    match (&target.seed, crate::spec::ImageRef::parse(&target.image)) {
        (Some(seed), Ok(r)) => format!("{}@{}", r.name(), seed.manifest_digest),
        _ => target.image.clone(),
    }
}

/// Record checks; on failure fail Prep. `Some(decision)` when Prep must stop here.
fn record_checks(pass: &mut Pass<'_>, checks: &[CheckOutcome]) -> Option<Decision> {
    for c in checks {
        pass.record_check(c.name, c.result, c.message.clone());
    }
    let msg = checks::failure_message(checks)?;
    pass.rec.status.set_prep_failed(pass.cx, &msg);
    Some(Decision::Blocked {
        reason: format!("Prep failed: {msg}"),
    })
}

fn run(step: Step) -> Result<(Decision, Vec<&'static str>)> {
    let up = upcoming(step.name());
    Ok((Decision::Run(step), up))
}

/// The next thing to do in Prep.
pub(super) fn next(pass: &mut Pass<'_>) -> Result<(Decision, Vec<&'static str>)> {
    let stage = Stage::Prep;
    let done = |pass: &Pass<'_>, step: &str| pass.rec.progress.is_done(stage, step);

    if !done(pass, STEP_PREP_CHECKS) {
        let checks = prep_checks(pass.desired, pass.facts)?;
        if let Some(d) = record_checks(pass, &checks) {
            return Ok((d, vec![]));
        }
        pass.rec.progress.mark_done(stage, STEP_PREP_CHECKS);
    }

    let Some(target) = pass.rec.target.clone() else {
        let reason = "Prep is in progress without a seed (spec.seedImageRef)".to_string();
        pass.rec.status.set_prep_failed(pass.cx, &reason);
        return Ok((Decision::Blocked { reason }, vec![]));
    };
    let Some(seed) = target.seed.clone() else {
        return run(Step::InspectSeed {
            image: target.image.clone(),
        });
    };
    let image = pinned_image(&target);

    if !done(pass, STEP_SEED_CHECKS) {
        let ostree = pass.facts.ostree()?;
        let host = Host {
            host: pass.facts.host()?,
            storage: pass.facts.storage()?,
            running_version: ostree.running_version(),
            missing_images_bytes: None,
        };
        let checks = compat::check_info(&seed.info, Some(&target.version), &host);
        if let Some(d) = record_checks(pass, &checks) {
            return Ok((d, vec![]));
        }
        pass.rec.progress.mark_done(stage, STEP_SEED_CHECKS);
    }

    if !done(pass, STEP_IMAGE_CLEANUP) {
        let cleanup = &pass.desired.image_cleanup;
        if !cleanup.on_prep {
            pass.record_check(
                CHECK_IMAGE_CLEANUP,
                CheckResult::Skipped,
                "disabled by annotation image-cleanup.lca.openshift.io/on-prep: Disabled".into(),
            );
        } else {
            let usage = pass
                .facts
                .storage()?
                .container_storage
                .as_ref()
                .map(|m| m.usage)
                .unwrap_or_default();
            let threshold = cleanup.disk_usage_threshold_percent;
            if crate::images::cleanup::needed(&usage, cleanup) {
                return run(Step::ImageCleanup {
                    threshold_percent: threshold,
                });
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

    let now = pass.cx.now;
    pass.rec.status.start_phase(stage, PHASE_STATEROOT, now);
    let stateroot = target.stateroot.clone();
    if !done(pass, STEP_FETCH_SEED_META) {
        return run(Step::FetchSeedMeta { image });
    }
    if !done(pass, STEP_IMPORT_OSTREE) {
        return run(Step::ImportOstree {
            image,
            commit: seed.info.ostree_commit.clone(),
            stateroot,
        });
    }
    if !done(pass, STEP_DEPLOY_STATEROOT) {
        let mut kargs: Vec<String> = seed.info.kernel_args.clone();
        kargs.push(format!("ibu={}", target.version));
        return run(Step::DeployStateroot {
            image,
            stateroot,
            commit: seed.info.ostree_commit.clone(),
            kargs,
        });
    }
    if !done(pass, STEP_RESTORE_VAR) {
        return run(Step::RestoreVar { image, stateroot });
    }
    if !done(pass, STEP_RESTORE_ETC) {
        let Some(deployment) = target.deployment.clone() else {
            let reason = "internal: the new deployment was not recorded; Idle aborts".to_string();
            pass.rec.status.set_prep_failed(pass.cx, &reason);
            return Ok((Decision::Blocked { reason }, vec![]));
        };
        return run(Step::RestoreEtc {
            image,
            stateroot,
            deployment,
        });
    }
    pass.rec.status.stop_phase(stage, PHASE_STATEROOT, now);
    pass.rec.status.start_phase(stage, PHASE_PRECACHE, now);
    if !done(pass, STEP_PRECACHE) {
        return run(Step::Precache { image });
    }
    pass.rec.status.stop_phase(stage, PHASE_PRECACHE, now);
    complete(pass);
    Ok((
        Decision::Converged {
            summary: PREP_COMPLETED_MESSAGE.into(),
        },
        vec![],
    ))
}

/// All steps done: PrepCompleted True, the stage's history closed.
fn complete(pass: &mut Pass<'_>) {
    let cx = pass.cx;
    let precache = pass
        .rec
        .status
        .checks
        .iter()
        .find(|c| c.name == STEP_PRECACHE)
        .map(|c| c.message.clone());
    pass.rec
        .status
        .set_prep_completed(cx, PREP_COMPLETED_MESSAGE);
    if let Some(summary) = precache {
        // LCA reports the precache count with the completion; keep it in PrepInProgress.
        pass.rec
            .status
            .set_prep_in_progress_message(cx, &format!("Prep completed: {summary}"));
    }
    pass.rec.status.stop_stage_history(Stage::Prep, cx.now);
}

fn set_check(rec: &mut Recorded, cx: Ctx, name: &str, result: CheckResult, message: String) {
    rec.status.checks.retain(|c| c.name != name);
    rec.status.checks.push(Check {
        name: name.into(),
        result,
        message,
        time: cx.now,
    });
}

/// Apply a Prep step's outcome. Every step but the image cleanup fails Prep when it fails.
pub(super) fn record_outcome(rec: &mut Recorded, cx: Ctx, step: &Step, outcome: &Outcome) {
    let name = step.name();
    if let Step::ImageCleanup { .. } = step {
        let (result, message) = match outcome {
            Outcome::Succeeded { message } | Outcome::Produced { message, .. } => {
                (CheckResult::Passed, message.clone())
            }
            Outcome::Warning { message } => (CheckResult::Warning, message.clone()),
            Outcome::Failed { message } => (
                CheckResult::Warning,
                format!("image cleanup failed, continuing without it: {message}"),
            ),
        };
        set_check(rec, cx, CHECK_IMAGE_CLEANUP, result, message);
        rec.progress.mark_done(Stage::Prep, name);
        return;
    }
    match outcome {
        Outcome::Failed { message } => {
            let msg = match step {
                Step::InspectSeed { .. } => {
                    format!("failed to validate seed image info: {message}")
                }
                _ => message.clone(),
            };
            rec.status.set_prep_failed(cx, &msg);
            if let Step::Precache { .. } = step {
                set_check(rec, cx, STEP_PRECACHE, CheckResult::Failed, message.clone());
            }
        }
        Outcome::Produced { data, .. } => {
            match (data, rec.target.as_mut()) {
                (StepData::Seed(s), Some(t)) => t.seed = Some((**s).clone()),
                (StepData::Deployment(d), Some(t)) => t.deployment = Some(d.clone()),
                _ => {}
            }
            rec.progress.mark_done(Stage::Prep, name);
        }
        Outcome::Succeeded { message } | Outcome::Warning { message } => {
            if let Step::Precache { .. } = step {
                // The precache summary stays visible in the PrepInProgress message.
                set_check(rec, cx, STEP_PRECACHE, CheckResult::Passed, message.clone());
                rec.status.set_prep_in_progress(cx, message);
            }
            rec.progress.mark_done(Stage::Prep, name);
        }
    }
}
