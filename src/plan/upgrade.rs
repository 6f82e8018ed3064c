//! Planning the Upgrade stage before the pivot, and recording every Upgrade step's outcome.
//!
//! Before the pivot the old stateroot is booted and everything is written into the new
//! stateroot, which nothing runs from yet; the old one stays bootable and untouched but for
//! ibu's own state. One step per run, each leaving a marker, each idempotent:
//!
//! | # | step | writes | on failure |
//! |---|---|---|---|
//! | 1 | `HealthChecks` | nothing: systemd's state (a fact) and the drop-ins | wait and retry (LCA) |
//! | 2 | `Backup` | `oadpContent` paths and podman volumes into the new stateroot | Upgrade failed |
//! | 3 | `CarryIdentity` | the node's identity and ibu itself into the new stateroot | Upgrade failed |
//! | 4 | `RegenerateCrypto` | new SSH host keys / certificates for those from the seed | Upgrade failed |
//! | 5 | `StageManifests` | the extra manifests for the target version, by wave | Upgrade failed |
//! | 6 | `WriteAutoRollback` | the auto-rollback config and the init monitor timer | Upgrade failed |
//! | 7 | `SaveState` | ibu's status and desired state into the new stateroot | Upgrade failed |
//! | 8 | `Pivot` | the boot-once entry (syslinux) or the new default | Upgrade failed |
//! | 9 | `Reboot` | nothing: `systemctl reboot` | Upgrade failed |
//!
//! Every failure before the pivot leaves the old stateroot booted and the default, so `Idle`
//! aborts as after Prep. The crypto material is regenerated before the pivot rather than after
//! it (LCA does it after, because its certificates live in the cluster's etcd): on a node all
//! of it is files, and doing it here means no service of the new stateroot ever starts with
//! the seed's keys, and the reboot-to-completed downtime is shorter.
//!
//! **Coming back.** The `Reboot` step records the boot it was asked in. A later run that finds
//! the old stateroot booted *in another boot* while Upgrade is still in progress knows the
//! node returned without a rollback ibu asked for — a manual pick in the boot menu, or the
//! bootloader falling back after the new stateroot failed to boot — and marks Upgrade failed
//! "Uncontrolled rollback" (LCA's message) with `Idle` as the next stage. That is how the old
//! stateroot carries LCA's "Uncontrolled rollback" copy: it is derived from the old stateroot's
//! own state file, so the status never says so before it is true.

use anyhow::Result;

use super::{
    Decision, Outcome, Pass, Phase, RebootKind, STEP_APPLY_IDENTITY, STEP_BACKUP,
    STEP_CARRY_IDENTITY, STEP_COMMIT_PIVOT, STEP_FINISH_UPGRADE, STEP_HEALTH_CHECKS, STEP_PIVOT,
    STEP_POST_PIVOT_HEALTH_CHECKS, STEP_REBOOT, STEP_REGENERATE_CRYPTO, STEP_RESTORE_BACKUPS,
    STEP_SAVE_STATE, STEP_STAGE_MANIFESTS, STEP_WRITE_AUTO_ROLLBACK, Step, StepData, WakeOn,
};
use crate::spec::{Desired, Stage};
use crate::status::conditions::Ctx;
use crate::status::history::{PHASE_POSTPIVOT, PHASE_PREPIVOT};
use crate::status::store::{RebootRecord, Recorded, RollbackRecord};
use crate::status::{Check, CheckResult};

/// The steps before the pivot, in order.
pub const UPGRADE_PRE_PIVOT_STEPS: [&str; 9] = [
    STEP_HEALTH_CHECKS,
    STEP_BACKUP,
    STEP_CARRY_IDENTITY,
    STEP_REGENERATE_CRYPTO,
    STEP_STAGE_MANIFESTS,
    STEP_WRITE_AUTO_ROLLBACK,
    STEP_SAVE_STATE,
    STEP_PIVOT,
    STEP_REBOOT,
];

/// The steps after the pivot, in order (`ApplyManifests` once per wave).
pub const UPGRADE_POST_PIVOT_STEPS: [&str; 6] = [
    STEP_COMMIT_PIVOT,
    STEP_APPLY_IDENTITY,
    super::STEP_APPLY_MANIFESTS,
    STEP_RESTORE_BACKUPS,
    STEP_POST_PIVOT_HEALTH_CHECKS,
    STEP_FINISH_UPGRADE,
];

/// Check names in `status.checks`.
pub const CHECK_SYSTEM_STATE: &str = "SystemState";
pub const CHECK_PIVOT_BOOT: &str = "PivotBoot";

/// How long to wait before health checks run again after they failed.
pub const HEALTH_RETRY_SECS: u64 = 30;
/// The longest one run waits for systemd to finish starting before it exits and leaves the
/// next look to the retry timer (the init monitor restarts ibu meanwhile if it fires).
pub const STARTUP_WAIT_SECS: u64 = 120;
/// How long a requested reboot may take before ibu asks again.
pub const REBOOT_RETRY_SECS: i64 = 300;

/// LCA's message prefix while health checks fail.
pub const MSG_WAITING_FOR_HEALTH: &str = "Waiting for system to stabilize";
/// LCA's message for a return to the old stateroot nobody asked ibu for.
pub const MSG_UNCONTROLLED_ROLLBACK: &str = "Uncontrolled rollback";

/// Go's `time.Duration.String()` for whole seconds (`1800` → `30m0s`), as LCA prints the
/// init monitor's timeout.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

pub(super) fn upcoming(list: &[&'static str], after: &str) -> Vec<&'static str> {
    list.iter()
        .skip_while(|s| **s != after)
        .skip(1)
        .copied()
        .collect()
}

fn run(step: Step) -> Result<(Decision, Vec<&'static str>)> {
    let up = upcoming(&UPGRADE_PRE_PIVOT_STEPS, step.name());
    Ok((Decision::Run(step), up))
}

fn blocked(reason: String) -> Result<(Decision, Vec<&'static str>)> {
    Ok((Decision::Blocked { reason }, vec![]))
}

/// Fail the Upgrade stage with `msg` and block.
fn fail(pass: &mut Pass<'_>, msg: String) -> Result<(Decision, Vec<&'static str>)> {
    pass.rec.status.set_upgrade_failed(pass.cx, &msg);
    blocked(format!("Upgrade failed: {msg}"))
}

/// The health of the running system as systemd reports it: `None` when healthy, else the
/// decision to wait (recorded in the check and the in-progress message, as LCA does).
pub(super) fn system_state_gate(pass: &mut Pass<'_>) -> Result<Option<Decision>> {
    let system = pass.facts.boot()?.system.clone();
    if system.is_running() {
        pass.record_check(
            CHECK_SYSTEM_STATE,
            CheckResult::Passed,
            "systemd reports the system running".into(),
        );
        return Ok(None);
    }
    let detail = if system.failed_units.is_empty() {
        format!("systemd reports the system {}", system.state)
    } else {
        format!(
            "systemd reports the system {}: failed units {}",
            system.state,
            system.failed_units.join(", ")
        )
    };
    // Still starting: wait for the startup to end. Degraded or worse: look again later.
    let (result, retry_after_secs, wake_on) = if system.is_settling() {
        (
            CheckResult::Warning,
            STARTUP_WAIT_SECS,
            WakeOn::SystemStarted,
        )
    } else {
        (CheckResult::Failed, HEALTH_RETRY_SECS, WakeOn::Timer)
    };
    pass.record_check(CHECK_SYSTEM_STATE, result, detail.clone());
    let msg = format!("{MSG_WAITING_FOR_HEALTH}: {detail}");
    pass.rec.status.set_upgrade_in_progress(pass.cx, &msg);
    Ok(Some(Decision::Wait {
        reason: msg,
        retry_after_secs,
        wake_on,
    }))
}

/// After the drop-ins failed, wait a while before running them again.
pub(super) fn drop_in_backoff(pass: &Pass<'_>, step: &str) -> Option<Decision> {
    let c = pass.rec.status.checks.iter().find(|c| c.name == step)?;
    if c.result != CheckResult::Failed {
        return None;
    }
    let elapsed = pass.cx.now.seconds_since(c.time);
    let wait = HEALTH_RETRY_SECS as i64 - elapsed;
    (wait > 0).then(|| Decision::Wait {
        reason: format!("{MSG_WAITING_FOR_HEALTH}: {}", c.message),
        retry_after_secs: wait as u64,
        wake_on: WakeOn::Timer,
    })
}

/// The next thing to do in Upgrade.
pub(super) fn next(pass: &mut Pass<'_>) -> Result<(Decision, Vec<&'static str>)> {
    let stage = Stage::Upgrade;
    let (Some(target), Some(up)) = (pass.rec.target.clone(), pass.rec.upgrade.clone()) else {
        return fail(
            pass,
            "internal: Upgrade is in progress without a recorded Prep; Idle aborts".into(),
        );
    };
    let Some(deployment) = target.deployment.clone() else {
        return fail(
            pass,
            "internal: the new deployment was not recorded by Prep; Idle aborts".into(),
        );
    };
    let booted = pass.facts.ostree()?.booted_stateroot().map(str::to_string);
    if booted.as_deref() == Some(target.stateroot.as_str()) {
        return super::postpivot::next(pass, &target, &deployment);
    }
    let done = |pass: &Pass<'_>, step: &str| pass.rec.progress.is_done(stage, step);
    let now = pass.cx.now;
    pass.rec.status.start_phase(stage, PHASE_PREPIVOT, now);

    if let Some(asked) = &up.reboot {
        let boot = pass.facts.boot()?;
        if boot.boot_id != asked.boot_id {
            // Back in the old stateroot in a new boot, and not because ibu rolled back.
            pass.record_check(
                CHECK_PIVOT_BOOT,
                CheckResult::Failed,
                format!(
                    "the node booted stateroot {} (boot {}) after the pivot reboot into {}: \
                     someone booted the old stateroot, or the new one failed to boot and the \
                     bootloader fell back",
                    booted.as_deref().unwrap_or("?"),
                    boot.boot_id,
                    target.stateroot
                ),
            );
            return fail(pass, MSG_UNCONTROLLED_ROLLBACK.into());
        }
        if done(pass, STEP_REBOOT) {
            if now.seconds_since(asked.requested) < REBOOT_RETRY_SECS {
                return Ok((
                    Decision::Wait {
                        reason: format!(
                            "waiting for the reboot into stateroot {}",
                            target.stateroot
                        ),
                        retry_after_secs: 60,
                        wake_on: WakeOn::Timer,
                    },
                    vec![],
                ));
            }
            // The reboot did not happen: ask again.
            return reboot(pass, &target.stateroot);
        }
    }

    if !done(pass, STEP_HEALTH_CHECKS) {
        if let Some(d) = system_state_gate(pass)? {
            return Ok((d, vec![]));
        }
        if let Some(d) = drop_in_backoff(pass, STEP_HEALTH_CHECKS) {
            return Ok((d, vec![]));
        }
        return run(Step::HealthChecks {
            phase: Phase::PrePivot,
        });
    }
    let stateroot = target.stateroot.clone();
    if !done(pass, STEP_BACKUP) {
        if pass.desired.oadp_content.is_empty() {
            pass.rec.progress.mark_done(stage, STEP_BACKUP);
        } else {
            return run(Step::Backup { stateroot });
        }
    }
    if !done(pass, STEP_CARRY_IDENTITY) {
        return run(Step::CarryIdentity {
            stateroot,
            deployment,
        });
    }
    if !done(pass, STEP_REGENERATE_CRYPTO) {
        return run(Step::RegenerateCrypto {
            stateroot,
            deployment,
        });
    }
    if !done(pass, STEP_STAGE_MANIFESTS) {
        if pass.desired.extra_manifests.is_empty() {
            pass.rec.progress.mark_done(stage, STEP_STAGE_MANIFESTS);
        } else {
            return run(Step::StageManifests {
                stateroot,
                version: target.version.clone(),
            });
        }
    }
    if !done(pass, STEP_WRITE_AUTO_ROLLBACK) {
        return run(Step::WriteAutoRollback {
            stateroot,
            deployment,
        });
    }
    if !done(pass, STEP_SAVE_STATE) {
        return run(Step::SaveState {
            stateroot,
            deployment,
        });
    }
    if !done(pass, STEP_PIVOT) {
        return run(Step::Pivot {
            stateroot,
            deployment,
        });
    }
    pass.rec.status.stop_phase(stage, PHASE_PREPIVOT, now);
    reboot(pass, &stateroot)
}

/// Reboot into the new stateroot. The boot it is asked in is recorded *before* the step runs
/// (the planner's bookkeeping is saved first): once `systemctl reboot` is called, systemd may
/// stop ibu before it records anything, and a later boot must still know a reboot was asked.
fn reboot(pass: &mut Pass<'_>, stateroot: &str) -> Result<(Decision, Vec<&'static str>)> {
    let record = RebootRecord {
        boot_id: pass.facts.boot()?.boot_id.clone(),
        requested: pass.cx.now,
    };
    if let Some(u) = pass.rec.upgrade.as_mut() {
        u.reboot = Some(record);
    }
    run(Step::Reboot {
        kind: RebootKind::Pivot,
        message: format!("ibu: upgrade, rebooting into stateroot {stateroot}"),
    })
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

/// Which auto-rollback switch covers a failing post-pivot step: LCA's "post-reboot config"
/// (the one-shot configuration at the first boot: the pivot and the identity) or "upgrade
/// completion" (the rest of the post-pivot work).
fn rollback_enabled(desired: &Desired, step: &Step) -> bool {
    match step {
        Step::CommitPivot { .. } | Step::ApplyIdentity => desired.auto_rollback.post_reboot_config,
        _ => desired.auto_rollback.upgrade_completion,
    }
}

fn is_post_pivot(step: &Step) -> bool {
    matches!(
        step,
        Step::CommitPivot { .. }
            | Step::ApplyIdentity
            | Step::ApplyManifests { .. }
            | Step::RestoreBackups
            | Step::HealthChecks {
                phase: Phase::PostPivot
            }
            | Step::FinishUpgrade
    )
}

/// Start an automatic rollback with LCA's message: Upgrade failed, the reason as its message.
pub(super) fn start_auto_rollback(rec: &mut Recorded, cx: Ctx, reason: &str) {
    rec.status.set_upgrade_failed(cx, reason);
    if let Some(u) = rec.upgrade.as_mut() {
        u.rollback = Some(RollbackRecord {
            auto_reason: Some(reason.to_string()),
            reboot: None,
        });
    }
}

/// Apply an Upgrade step's outcome.
pub(super) fn record_outcome(
    rec: &mut Recorded,
    desired: &Desired,
    cx: Ctx,
    step: &Step,
    outcome: &Outcome,
) {
    let stage = Stage::Upgrade;
    let marker = step.marker();
    if let Step::HealthChecks { .. } = step {
        let name = step.name();
        match outcome {
            Outcome::Failed { message } => {
                set_check(rec, cx, name, CheckResult::Failed, message.clone());
                rec.status
                    .set_upgrade_in_progress(cx, &format!("{MSG_WAITING_FOR_HEALTH}: {message}"));
            }
            Outcome::Warning { message } => {
                set_check(rec, cx, name, CheckResult::Warning, message.clone());
                rec.status
                    .set_upgrade_in_progress(cx, crate::status::conditions::IN_PROGRESS);
                rec.progress.mark_done(stage, &marker);
            }
            Outcome::Succeeded { message } | Outcome::Produced { message, .. } => {
                set_check(rec, cx, name, CheckResult::Passed, message.clone());
                rec.status
                    .set_upgrade_in_progress(cx, crate::status::conditions::IN_PROGRESS);
                rec.progress.mark_done(stage, &marker);
            }
        }
        return;
    }
    match outcome {
        Outcome::Failed { message } => {
            if is_post_pivot(step) {
                if rollback_enabled(desired, step) {
                    start_auto_rollback(
                        rec,
                        cx,
                        &format!("Rollback due to postpivot failure: {message}"),
                    );
                } else {
                    rec.status.set_upgrade_failed(cx, message);
                }
            } else {
                rec.status.set_upgrade_failed(cx, message);
            }
        }
        Outcome::Produced { data, .. } => {
            if let Some(u) = rec.upgrade.as_mut() {
                match data {
                    StepData::Waves(w) => u.manifest_waves = w.clone(),
                    StepData::Pivot(m) => u.pivot = Some(*m),
                    _ => {}
                }
            }
            rec.progress.mark_done(stage, &marker);
        }
        Outcome::Succeeded { .. } | Outcome::Warning { .. } => {
            rec.progress.mark_done(stage, &marker);
            if let Step::FinishUpgrade = step {
                rec.status.stop_phase(stage, PHASE_POSTPIVOT, cx.now);
                rec.status.set_upgrade_completed(cx);
                rec.status.stop_stage_history(stage, cx.now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(1800), "30m0s");
        assert_eq!(go_duration(60), "1m0s");
        assert_eq!(go_duration(5), "5s");
        assert_eq!(go_duration(3661), "1h1m1s");
        assert_eq!(go_duration(0), "0s");
    }
}
