//! The stage machine, exactly LCA's: which stages may follow, whether a transition is asked
//! for, and what an accepted or rejected transition writes into the conditions.
//!
//! A port of `getValidNextStageList`, `isTransitionRequested`, `validateStageTransition` and
//! `isFinalizeOrAbort` from LCA's `ibu_controller.go`. Pure: whether the node is "after pivot"
//! (booted into the new stateroot) is passed in, as a lazily evaluated fact, because only some
//! situations need it.

use anyhow::Result;

use crate::spec::Stage;
use crate::status::conditions::{ABORTING, Ctx, FINALIZING, IN_PROGRESS};
use crate::status::{ConditionStatus, ConditionType, Reason, Status};

/// LCA's messages for a rejected transition.
pub const MSG_PREVIOUS_NOT_SUCCEEDED: &str = "Previous stage not succeeded";
pub const MSG_UPGRADE_NOT_STARTED: &str = "Upgrade not started or already finalized";
pub const MSG_ABORT_OR_FINALIZE_NOT_ALLOWED: &str = "Abort or finalize not allowed";
pub const MSG_IDLE_ROLLBACK_FAILED: &str = "Transition to Idle not allowed - Rollback failed";
pub const MSG_IDLE_ROLLBACK_IN_PROGRESS: &str =
    "Transition to Idle not allowed - Rollback is in progress";
pub const MSG_IDLE_ROLLBACK_FIRST: &str = "Transition to Idle not allowed - Rollback first";

/// The message of LCA's CRD validation rule, used when `ibu set-stage` refuses a move.
pub const MSG_TRANSITION_NOT_PERMITTED: &str = "the stage transition is not permitted. Please refer to status.validNextStages for valid transitions. If status.validNextStages is not present, it indicates that no transitions are currently allowed";

/// "Is the booted deployment in the new stateroot?", asked only when the answer matters.
pub trait AfterPivot {
    fn after_pivot(&self) -> Result<bool>;
}

impl AfterPivot for bool {
    fn after_pivot(&self) -> Result<bool> {
        Ok(*self)
    }
}

/// `getValidNextStageList`.
pub fn valid_next_stages(status: &Status, pivot: &dyn AfterPivot) -> Result<Vec<Stage>> {
    use Stage::*;
    let in_progress = status.in_progress_stage();
    if matches!(in_progress, Some(Idle) | Some(Rollback)) || status.is_stage_failed(Rollback) {
        // Aborting, finalizing (or their failures), rollback in progress or failed.
        return Ok(vec![]);
    }
    if in_progress == Some(Prep) || status.is_stage_failed(Prep) {
        return Ok(vec![Idle]);
    }
    if in_progress == Some(Upgrade) || status.is_stage_failed(Upgrade) {
        return Ok(if pivot.after_pivot()? {
            vec![Rollback]
        } else {
            vec![Idle]
        });
    }
    if status.is_stage_completed(Rollback) {
        return Ok(vec![Idle]);
    }
    if status.is_stage_completed(Upgrade) {
        return Ok(vec![Idle, Rollback]);
    }
    if status.is_stage_completed(Prep) {
        return Ok(vec![Idle, Upgrade]);
    }
    if status.is_stage_completed(Idle) {
        return Ok(vec![Prep]);
    }
    // A fresh node: no Idle condition yet. (LCA's "Blocked by IPConfig" case has no
    // counterpart here: ibu has no second controller to wait for.)
    if status.condition(ConditionType::Idle).is_none() {
        return Ok(vec![Idle]);
    }
    Ok(vec![])
}

/// `isTransitionRequested`: the desired stage is neither done nor being worked on.
pub fn transition_requested(status: &Status, desired: Stage) -> bool {
    if desired == Stage::Idle {
        !status.is_stage_completed(desired) && !status.is_stage_in_progress(desired)
    } else {
        !status.is_stage_completed_or_failed(desired) && !status.is_stage_in_progress(desired)
    }
}

/// What an Idle request means in the current situation (`isFinalizeOrAbort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleKind {
    Finalize,
    Abort,
    /// First Idle on a fresh node.
    Initial,
}

fn idle_kind(status: &Status, pivot: &dyn AfterPivot) -> Result<IdleKind> {
    let final_done = [
        ConditionType::UpgradeCompleted,
        ConditionType::RollbackCompleted,
    ]
    .into_iter()
    .any(|k| {
        status
            .condition(k)
            .is_some_and(|c| c.status == ConditionStatus::True)
    });
    if final_done {
        return Ok(IdleKind::Finalize);
    }
    let idle_false = status
        .condition(ConditionType::Idle)
        .is_some_and(|c| c.status == ConditionStatus::False);
    let rollback_ok = status
        .condition(ConditionType::RollbackInProgress)
        .is_none_or(|c| c.reason == Reason::InvalidTransition);
    if idle_false && rollback_ok && !pivot.after_pivot()? {
        return Ok(IdleKind::Abort);
    }
    Ok(IdleKind::Initial)
}

/// The result of asking for a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Accepted; the conditions now say the new stage is in progress.
    Accepted { to: Stage, idle: Option<IdleKind> },
    /// Rejected with LCA's message, recorded as `InvalidTransition`; nothing else changes.
    Rejected { message: &'static str },
}

/// `validateStageTransition`: accept or reject a move to `desired`, updating the conditions.
pub fn apply_transition(
    status: &mut Status,
    desired: Stage,
    pivot: &dyn AfterPivot,
    cx: Ctx,
) -> Result<Transition> {
    let valid = valid_next_stages(status, pivot)?;
    if valid.contains(&desired) {
        status.clear_invalid_transitions(cx);
        let mut idle = None;
        match desired {
            Stage::Prep => {
                status.set_idle_in_progress(cx, Reason::InProgress, IN_PROGRESS);
                status.set_prep_in_progress(cx, IN_PROGRESS);
            }
            Stage::Upgrade => status.set_upgrade_in_progress(cx, IN_PROGRESS),
            Stage::Rollback => {
                status.set_upgrade_rollback_requested(cx);
                status.set_rollback_in_progress(cx, IN_PROGRESS);
            }
            Stage::Idle => {
                let kind = idle_kind(status, pivot)?;
                match kind {
                    IdleKind::Finalize => {
                        status.set_idle_in_progress(cx, Reason::Finalizing, FINALIZING)
                    }
                    IdleKind::Abort => status.set_idle_in_progress(cx, Reason::Aborting, ABORTING),
                    IdleKind::Initial => {
                        if status.condition(ConditionType::Idle).is_none() {
                            status.reset_to_idle(cx);
                        }
                    }
                }
                idle = Some(kind);
            }
        }
        return Ok(Transition::Accepted { to: desired, idle });
    }
    let message = match desired {
        Stage::Prep | Stage::Upgrade => MSG_PREVIOUS_NOT_SUCCEEDED,
        Stage::Rollback => MSG_UPGRADE_NOT_STARTED,
        Stage::Idle => {
            if status.is_stage_failed(Stage::Rollback) {
                MSG_IDLE_ROLLBACK_FAILED
            } else if pivot.after_pivot()? {
                if status.is_stage_in_progress(Stage::Rollback) {
                    MSG_IDLE_ROLLBACK_IN_PROGRESS
                } else {
                    MSG_IDLE_ROLLBACK_FIRST
                }
            } else {
                MSG_ABORT_OR_FINALIZE_NOT_ALLOWED
            }
        }
    };
    status.set_invalid_transition(cx, desired, message);
    Ok(Transition::Rejected { message })
}

#[cfg(test)]
mod tests;
