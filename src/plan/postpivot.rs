//! Planning the Upgrade stage after the pivot: ibu runs at boot in the new stateroot.
//!
//! The state file here is the copy `SaveState` wrote before the pivot, so the planner knows it
//! is after the pivot from the facts alone (the booted stateroot is the target). Each sub-step
//! leaves a marker; a restart or a power cut continues with the first one without.
//!
//! | # | step | on failure |
//! |---|---|---|
//! | 1 | `CommitPivot`: the new deployment becomes the default for good (it booted once) | rollback (post-reboot config) |
//! | 2 | `ApplyIdentity`: carried identity verified in place, hostname applied | rollback (post-reboot config) |
//! | 3 | `ApplyManifests` per wave, in wave order | rollback (upgrade completion) |
//! | 4 | `RestoreBackups` in wave order | rollback (upgrade completion) |
//! | 5 | systemd state, then `PostPivotHealthChecks` (the deferred health checks) | wait and retry |
//! | 6 | `FinishUpgrade`: the init monitor removed; UpgradeCompleted "Upgrade completed" | rollback (upgrade completion) |
//!
//! "Rollback" means LCA's automatic rollback with "Rollback due to postpivot failure: ...",
//! unless the matching switch is off (`disabledForPostRebootConfig` / annotation
//! `post-reboot-config`, `disabledForUpgradeCompletion` / `upgrade-completion`): then Upgrade
//! fails and waits for a manual Rollback. Before all of it, every run checks the **init
//! monitor**: when the upgrade is not complete `initMonitorTimeoutSeconds` after boot (and the
//! monitor is not disabled), ibu rolls back with "Rollback due to LCA Init Monitor timeout,
//! after <duration>". The `ibu-init-monitor.timer` written at the pivot makes sure ibu runs at
//! that moment even if nothing else starts it.

use anyhow::Result;

use super::upgrade::{
    UPGRADE_POST_PIVOT_STEPS, drop_in_backoff, go_duration, start_auto_rollback, system_state_gate,
    upcoming,
};
use super::{
    Decision, Pass, Phase, STEP_APPLY_IDENTITY, STEP_COMMIT_PIVOT, STEP_FINISH_UPGRADE,
    STEP_POST_PIVOT_HEALTH_CHECKS, STEP_RESTORE_BACKUPS, Step, manifests_marker,
};
use crate::spec::Stage;
use crate::status::history::{PHASE_POSTPIVOT, PHASE_PREPIVOT};
use crate::status::store::{DeploymentRecord, Target};

fn run(step: Step) -> Result<(Decision, Vec<&'static str>)> {
    let up = upcoming(&UPGRADE_POST_PIVOT_STEPS, step.name());
    Ok((Decision::Run(step), up))
}

/// LCA's message when the init monitor fires.
pub fn init_monitor_message(timeout_secs: u64) -> String {
    format!(
        "Rollback due to LCA Init Monitor timeout, after {}",
        go_duration(timeout_secs)
    )
}

pub(super) fn next(
    pass: &mut Pass<'_>,
    target: &Target,
    deployment: &DeploymentRecord,
) -> Result<(Decision, Vec<&'static str>)> {
    let stage = Stage::Upgrade;
    let now = pass.cx.now;
    pass.rec.status.stop_phase(stage, PHASE_PREPIVOT, now);
    pass.rec.status.start_phase(stage, PHASE_POSTPIVOT, now);

    let ar = &pass.desired.auto_rollback;
    if ar.init_monitor {
        let uptime = pass.facts.boot()?.uptime_secs;
        if uptime >= ar.init_monitor_timeout_seconds {
            let msg = init_monitor_message(ar.init_monitor_timeout_seconds);
            start_auto_rollback(&mut pass.rec, pass.cx, &msg);
            return super::rollback::next(pass);
        }
    }

    let done = |pass: &Pass<'_>, step: &str| pass.rec.progress.is_done(stage, step);
    if !done(pass, STEP_COMMIT_PIVOT) {
        return run(Step::CommitPivot {
            stateroot: target.stateroot.clone(),
            deployment: deployment.clone(),
        });
    }
    if !done(pass, STEP_APPLY_IDENTITY) {
        return run(Step::ApplyIdentity);
    }
    let waves = pass
        .rec
        .upgrade
        .as_ref()
        .map(|u| u.manifest_waves.clone())
        .unwrap_or_default();
    for wave in waves {
        if !done(pass, &manifests_marker(&wave)) {
            return run(Step::ApplyManifests { wave });
        }
    }
    if !done(pass, STEP_RESTORE_BACKUPS) {
        if pass.desired.oadp_content.is_empty() {
            pass.rec.progress.mark_done(stage, STEP_RESTORE_BACKUPS);
        } else {
            return run(Step::RestoreBackups);
        }
    }
    if !done(pass, STEP_POST_PIVOT_HEALTH_CHECKS) {
        if let Some(d) = system_state_gate(pass)? {
            return Ok((d, vec![]));
        }
        if let Some(d) = drop_in_backoff(pass, STEP_POST_PIVOT_HEALTH_CHECKS) {
            return Ok((d, vec![]));
        }
        return run(Step::HealthChecks {
            phase: Phase::PostPivot,
        });
    }
    // FinishUpgrade's outcome completes the stage, so it is never seen done here.
    let _ = STEP_FINISH_UPGRADE;
    run(Step::FinishUpgrade)
}
