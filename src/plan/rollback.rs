//! Planning a rollback, requested (`stage: Rollback`) or automatic, and recording its steps.
//!
//! Only after the pivot: the new stateroot is booted and the old one is still deployed. Three
//! steps, each with a marker:
//!
//! | # | step | what |
//! |---|---|---|
//! | 1 | `RollbackSaveState` | ibu's status and desired state into the **old** stateroot |
//! | 2 | `RollbackSetDefault` | the old deployment first in the boot order again |
//! | 3 | `RollbackReboot` | `systemctl reboot` |
//!
//! Back in the old stateroot the copy written by step 1 is ibu's state: a requested rollback
//! completes (RollbackCompleted "Rollback completed"; `Idle` then finalizes, removing the new
//! stateroot); an automatic one leaves Upgrade failed with LCA's reason ("Rollback due to ...")
//! and `Idle` as the next stage. An automatic rollback runs under the Upgrade stage (its
//! markers are Upgrade's); a requested one under Rollback.

use anyhow::Result;

use super::{
    Decision, Outcome, Pass, RebootKind, STEP_ROLLBACK_REBOOT, STEP_ROLLBACK_SAVE_STATE,
    STEP_ROLLBACK_SET_DEFAULT, Step, WakeOn,
};
use crate::spec::Stage;
use crate::status::conditions::{Ctx, ROLLBACK_COMPLETED};
use crate::status::store::{RebootRecord, Recorded, RollbackRecord};

const STEPS: [&str; 3] = [
    STEP_ROLLBACK_SAVE_STATE,
    STEP_ROLLBACK_SET_DEFAULT,
    STEP_ROLLBACK_REBOOT,
];

/// An automatic rollback is in flight (it runs while no stage is in progress).
pub(super) fn pending(rec: &Recorded) -> bool {
    rec.upgrade.as_ref().is_some_and(|u| u.rollback.is_some())
}

fn stage_of(rec: &Recorded) -> Stage {
    if rec.status.is_stage_in_progress(Stage::Rollback) {
        Stage::Rollback
    } else {
        Stage::Upgrade
    }
}

fn run(step: Step) -> Result<(Decision, Vec<&'static str>)> {
    let up = super::upgrade::upcoming(&STEPS, step.name());
    Ok((Decision::Run(step), up))
}

/// The rollback could not be done: say so in the right conditions and stop trying.
fn give_up(rec: &mut Recorded, cx: Ctx, rb: &RollbackRecord, msg: &str) -> String {
    let reason = match &rb.auto_reason {
        None => {
            rec.status.set_rollback_failed(cx, msg);
            format!("Rollback failed: {msg}")
        }
        Some(auto) => {
            let m = format!("{auto}; the rollback failed: {msg}");
            rec.status.set_upgrade_failed(cx, &m);
            format!("Upgrade failed: {m}")
        }
    };
    if let Some(u) = rec.upgrade.as_mut() {
        u.rollback = None;
    }
    reason
}

pub(super) fn next(pass: &mut Pass<'_>) -> Result<(Decision, Vec<&'static str>)> {
    let stage = stage_of(&pass.rec);
    let cx = pass.cx;
    let Some(up) = pass.rec.upgrade.clone() else {
        pass.rec
            .status
            .set_rollback_failed(cx, "there is no upgrade to roll back");
        return Ok((
            Decision::Blocked {
                reason: "Rollback failed: there is no upgrade to roll back".into(),
            },
            vec![],
        ));
    };
    let rb = up.rollback.clone().unwrap_or(RollbackRecord {
        auto_reason: None,
        reboot: None,
    });
    let booted = pass
        .facts
        .ostree()?
        .booted_stateroot()
        .map(str::to_string)
        .unwrap_or_default();

    if booted == up.old_stateroot {
        // Back in the old stateroot: the rollback happened.
        if let Some(u) = pass.rec.upgrade.as_mut() {
            u.rollback = None;
        }
        return Ok(match &rb.auto_reason {
            None => {
                pass.rec.status.set_rollback_completed(cx);
                pass.rec.status.stop_stage_history(Stage::Rollback, cx.now);
                (
                    Decision::Converged {
                        summary: ROLLBACK_COMPLETED.into(),
                    },
                    vec![],
                )
            }
            Some(reason) => (
                Decision::Blocked {
                    reason: format!(
                        "Upgrade failed: {reason}; the node is back in stateroot {booted}; \
                         Idle removes the new stateroot"
                    ),
                },
                vec![],
            ),
        });
    }

    let done = |pass: &Pass<'_>, step: &str| pass.rec.progress.is_done(stage, step);
    if let Some(r) = &rb.reboot {
        let boot = pass.facts.boot()?;
        if boot.boot_id != r.boot_id {
            let msg = format!(
                "the node booted stateroot {booted} again after the rollback reboot, not {}",
                up.old_stateroot
            );
            let reason = give_up(&mut pass.rec, cx, &rb, &msg);
            return Ok((Decision::Blocked { reason }, vec![]));
        }
        if done(pass, STEP_ROLLBACK_REBOOT) {
            if cx.now.seconds_since(r.requested) < super::upgrade::REBOOT_RETRY_SECS {
                return Ok((
                    Decision::Wait {
                        reason: format!(
                            "waiting for the reboot into stateroot {}",
                            up.old_stateroot
                        ),
                        retry_after_secs: 60,
                        wake_on: WakeOn::Timer,
                    },
                    vec![],
                ));
            }
            return reboot(pass, &up.old_stateroot);
        }
    }
    if rb.auto_reason.is_none() {
        pass.rec
            .status
            .set_rollback_in_progress(cx, crate::status::conditions::IN_PROGRESS);
    }
    if !done(pass, STEP_ROLLBACK_SAVE_STATE) {
        return run(Step::RollbackSaveState {
            stateroot: up.old_stateroot.clone(),
            deployment: up.old_deployment.clone(),
        });
    }
    if !done(pass, STEP_ROLLBACK_SET_DEFAULT) {
        return run(Step::RollbackSetDefault {
            stateroot: up.old_stateroot.clone(),
            deployment: up.old_deployment.clone(),
        });
    }
    reboot(pass, &up.old_stateroot)
}

/// Reboot into the old stateroot, the boot recorded first (see `upgrade::reboot`).
fn reboot(pass: &mut Pass<'_>, old: &str) -> Result<(Decision, Vec<&'static str>)> {
    let record = RebootRecord {
        boot_id: pass.facts.boot()?.boot_id.clone(),
        requested: pass.cx.now,
    };
    if let Some(rb) = pass.rec.upgrade.as_mut().and_then(|u| u.rollback.as_mut()) {
        rb.reboot = Some(record);
    }
    run(Step::Reboot {
        kind: RebootKind::Rollback,
        message: format!("ibu: rollback, rebooting into stateroot {old}"),
    })
}

/// Apply a rollback step's outcome.
pub(super) fn record_outcome(rec: &mut Recorded, cx: Ctx, step: &Step, outcome: &Outcome) {
    let stage = stage_of(rec);
    let rb = rec
        .upgrade
        .as_ref()
        .and_then(|u| u.rollback.clone())
        .unwrap_or(RollbackRecord {
            auto_reason: None,
            reboot: None,
        });
    match outcome {
        Outcome::Failed { message } => {
            give_up(rec, cx, &rb, message);
        }
        Outcome::Succeeded { .. } | Outcome::Warning { .. } | Outcome::Produced { .. } => {
            rec.progress.mark_done(stage, &step.marker());
        }
    }
}
