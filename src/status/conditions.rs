//! Condition bookkeeping with LCA's exact semantics.
//!
//! LCA stores the whole stage machine in `status.conditions`; which stage is in progress, which
//! completed and which failed is read back from them. These functions are a faithful port of
//! `controllers/utils/conditions.go` (including its ordering quirk: a condition whose status
//! flips, and `Idle` on every change, moves to the end of the list, which is what
//! `oc get ibu` shows as "State" and "Details"). They are pure: `now` and `generation` are
//! arguments.

use super::{Condition, ConditionStatus, ConditionType, Reason, Status, Timestamp};
use crate::spec::Stage;

pub const IN_PROGRESS: &str = "In progress";
pub const FINALIZING: &str = "Finalizing";
pub const ABORTING: &str = "Aborting";
pub const PREP_COMPLETED: &str = "Prep completed";
pub const PREP_FAILED: &str = "Prep failed";
pub const UPGRADE_COMPLETED: &str = "Upgrade completed";
pub const UPGRADE_FAILED: &str = "Upgrade failed";
pub const ROLLBACK_COMPLETED: &str = "Rollback completed";
pub const ROLLBACK_FAILED: &str = "Rollback failed";
pub const ROLLBACK_REQUESTED: &str = "Rollback requested";
pub const IDLE: &str = "Idle";
pub const MANUAL_CLEANUP_ANNOTATION: &str = "lca.openshift.io/manual-cleanup-done";

/// The message LCA appends when abort or finalize cleanup failed.
pub fn manual_cleanup_hint() -> String {
    format!(
        "Perform cleanup manually then add '{MANUAL_CLEANUP_ANNOTATION}' annotation to ibu CR to transition back to Idle"
    )
}

pub fn find(conditions: &[Condition], kind: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.kind == kind)
}

pub fn remove(conditions: &mut Vec<Condition>, kind: ConditionType) {
    conditions.retain(|c| c.kind != kind);
}

/// `meta.SetStatusCondition`: update in place, touching `lastTransitionTime` only when the
/// status changes; append when absent.
fn meta_set(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.kind == new.kind) {
        None => conditions.push(new),
        Some(existing) => {
            if existing.status != new.status {
                existing.status = new.status;
                existing.last_transition_time = new.last_transition_time;
            }
            existing.reason = new.reason;
            existing.message = new.message;
            existing.observed_generation = new.observed_generation;
        }
    }
}

/// LCA's `SetStatusCondition`.
pub fn set(
    conditions: &mut Vec<Condition>,
    kind: ConditionType,
    reason: Reason,
    status: bool,
    message: impl Into<String>,
    generation: i64,
    now: Timestamp,
) {
    let status = ConditionStatus::from(status);
    let last_is_same = conditions.last().is_some_and(|c| c.kind == kind);
    if let Some(existing) = find(conditions, kind)
        && (existing.status != status || kind == ConditionType::Idle)
        && !last_is_same
    {
        remove(conditions, kind);
    }
    meta_set(
        conditions,
        Condition {
            kind,
            status,
            reason,
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        },
    );
}

/// The fields every status-changing helper needs.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub generation: i64,
    pub now: Timestamp,
}

impl Status {
    fn set(&mut self, cx: Ctx, kind: ConditionType, reason: Reason, status: bool, msg: &str) {
        set(
            &mut self.conditions,
            kind,
            reason,
            status,
            msg,
            cx.generation,
            cx.now,
        );
    }

    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        find(&self.conditions, kind)
    }

    /// `IsStageCompleted`: the stage's completed condition is True.
    pub fn is_stage_completed(&self, stage: Stage) -> bool {
        self.condition(ConditionType::completed(stage))
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// `IsStageFailed`: the stage's completed condition is False.
    pub fn is_stage_failed(&self, stage: Stage) -> bool {
        self.condition(ConditionType::completed(stage))
            .is_some_and(|c| c.status == ConditionStatus::False)
    }

    /// `IsStageCompletedOrFailed`: the stage's completed condition is present.
    pub fn is_stage_completed_or_failed(&self, stage: Stage) -> bool {
        self.condition(ConditionType::completed(stage)).is_some()
    }

    /// `IsStageInProgress`. For Idle, "in progress" means aborting or finalizing (or their
    /// failures); for other stages the in-progress condition is True.
    pub fn is_stage_in_progress(&self, stage: Stage) -> bool {
        let Some(c) = self.condition(ConditionType::in_progress(stage)) else {
            return false;
        };
        if stage == Stage::Idle {
            c.status == ConditionStatus::False
                && matches!(
                    c.reason,
                    Reason::Aborting
                        | Reason::AbortFailed
                        | Reason::Finalizing
                        | Reason::FinalizeFailed
                )
        } else {
            c.status == ConditionStatus::True
        }
    }

    /// `GetInProgressStage`: the first stage (in Idle, Prep, Upgrade, Rollback order) in progress.
    pub fn in_progress_stage(&self) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|s| self.is_stage_in_progress(*s))
    }

    /// `ClearInvalidTransitionStatusConditions`.
    pub fn clear_invalid_transitions(&mut self, cx: Ctx) {
        let invalid: Vec<ConditionType> = self
            .conditions
            .iter()
            .filter(|c| c.reason == Reason::InvalidTransition)
            .map(|c| c.kind)
            .collect();
        for kind in invalid {
            match kind {
                ConditionType::Idle => {
                    self.set_idle_in_progress(cx, Reason::InProgress, IN_PROGRESS)
                }
                ConditionType::PrepInProgress
                | ConditionType::UpgradeInProgress
                | ConditionType::RollbackInProgress => remove(&mut self.conditions, kind),
                _ => {}
            }
        }
    }

    /// `ResetStatusConditions`: drop everything but Idle, and set Idle True "Idle".
    pub fn reset_to_idle(&mut self, cx: Ctx) {
        self.conditions.retain(|c| c.kind == ConditionType::Idle);
        meta_set(
            &mut self.conditions,
            Condition {
                kind: ConditionType::Idle,
                status: ConditionStatus::True,
                reason: Reason::Idle,
                message: IDLE.into(),
                last_transition_time: cx.now,
                observed_generation: cx.generation,
            },
        );
    }

    /// `SetStatusInvalidTransition` on the desired stage's in-progress condition.
    pub fn set_invalid_transition(&mut self, cx: Ctx, desired: Stage, msg: &str) {
        self.set(
            cx,
            ConditionType::in_progress(desired),
            Reason::InvalidTransition,
            false,
            msg,
        );
    }

    pub fn set_idle_in_progress(&mut self, cx: Ctx, reason: Reason, msg: &str) {
        self.set(cx, ConditionType::Idle, reason, false, msg);
    }

    pub fn set_prep_in_progress(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::PrepInProgress,
            Reason::InProgress,
            true,
            msg,
        );
    }

    pub fn set_prep_failed(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::PrepCompleted,
            Reason::Failed,
            false,
            PREP_FAILED,
        );
        self.set(
            cx,
            ConditionType::PrepInProgress,
            Reason::Failed,
            false,
            msg,
        );
    }

    pub fn set_prep_completed(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::PrepInProgress,
            Reason::Completed,
            false,
            PREP_COMPLETED,
        );
        self.set(
            cx,
            ConditionType::PrepCompleted,
            Reason::Completed,
            true,
            msg,
        );
    }

    /// Change the message of the PrepInProgress condition of a completed Prep.
    pub fn set_prep_in_progress_message(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::PrepInProgress,
            Reason::Completed,
            false,
            msg,
        );
    }

    pub fn set_upgrade_in_progress(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::UpgradeInProgress,
            Reason::InProgress,
            true,
            msg,
        );
    }

    pub fn set_upgrade_failed(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::UpgradeCompleted,
            Reason::Failed,
            false,
            UPGRADE_FAILED,
        );
        self.set(
            cx,
            ConditionType::UpgradeInProgress,
            Reason::Failed,
            false,
            msg,
        );
    }

    pub fn set_upgrade_completed(&mut self, cx: Ctx) {
        self.set(
            cx,
            ConditionType::UpgradeInProgress,
            Reason::Completed,
            false,
            UPGRADE_COMPLETED,
        );
        self.set(
            cx,
            ConditionType::UpgradeCompleted,
            Reason::Completed,
            true,
            UPGRADE_COMPLETED,
        );
    }

    pub fn set_upgrade_rollback_requested(&mut self, cx: Ctx) {
        self.set(
            cx,
            ConditionType::UpgradeCompleted,
            Reason::Failed,
            false,
            ROLLBACK_REQUESTED,
        );
        self.set(
            cx,
            ConditionType::UpgradeInProgress,
            Reason::Failed,
            false,
            ROLLBACK_REQUESTED,
        );
    }

    pub fn set_rollback_in_progress(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::RollbackInProgress,
            Reason::InProgress,
            true,
            msg,
        );
    }

    pub fn set_rollback_failed(&mut self, cx: Ctx, msg: &str) {
        self.set(
            cx,
            ConditionType::RollbackCompleted,
            Reason::Failed,
            false,
            ROLLBACK_FAILED,
        );
        self.set(
            cx,
            ConditionType::RollbackInProgress,
            Reason::Failed,
            false,
            msg,
        );
    }

    pub fn set_rollback_completed(&mut self, cx: Ctx) {
        self.set(
            cx,
            ConditionType::RollbackInProgress,
            Reason::Completed,
            false,
            ROLLBACK_COMPLETED,
        );
        self.set(
            cx,
            ConditionType::RollbackCompleted,
            Reason::Completed,
            true,
            ROLLBACK_COMPLETED,
        );
    }

    /// `UpdateIBUStatus`: stamp the generation on the status and on the desired stage's conditions.
    pub fn stamp_generation(&mut self, desired: Stage, generation: i64) {
        self.observed_generation = generation;
        let in_progress = ConditionType::in_progress(desired);
        let completed = ConditionType::completed(desired);
        for c in &mut self.conditions {
            if c.kind == in_progress || c.kind == completed {
                c.observed_generation = generation;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(secs: i64) -> Ctx {
        Ctx {
            generation: 2,
            now: Timestamp::from_unix(1_700_000_000 + secs),
        }
    }

    fn kinds(s: &Status) -> Vec<ConditionType> {
        s.conditions.iter().map(|c| c.kind).collect()
    }

    #[test]
    fn flipping_status_moves_condition_to_end_with_new_transition_time() {
        let mut s = Status::default();
        s.reset_to_idle(cx(0));
        s.set_idle_in_progress(cx(1), Reason::InProgress, IN_PROGRESS);
        s.set_prep_in_progress(cx(1), IN_PROGRESS);
        assert_eq!(
            kinds(&s),
            [ConditionType::Idle, ConditionType::PrepInProgress]
        );
        s.set_prep_completed(
            cx(5),
            "Prep completed: total: 0 (pulled: 0, skipped: 0, failed: 0)",
        );
        // PrepInProgress flipped True -> False but is last: stays in place.
        assert_eq!(
            kinds(&s),
            [
                ConditionType::Idle,
                ConditionType::PrepInProgress,
                ConditionType::PrepCompleted
            ]
        );
        let pip = s.condition(ConditionType::PrepInProgress).unwrap();
        assert_eq!(pip.last_transition_time, cx(5).now);
        assert_eq!(pip.message, PREP_COMPLETED);
    }

    #[test]
    fn same_status_update_keeps_transition_time() {
        let mut s = Status::default();
        s.set_prep_in_progress(cx(0), IN_PROGRESS);
        s.set_prep_in_progress(cx(9), "total: 3 (pulled: 1, skipped: 1, failed: 0)");
        let c = s.condition(ConditionType::PrepInProgress).unwrap();
        assert_eq!(c.last_transition_time, cx(0).now);
        assert_eq!(c.message, "total: 3 (pulled: 1, skipped: 1, failed: 0)");
    }

    #[test]
    fn idle_moves_to_end_on_every_change() {
        let mut s = Status::default();
        s.set_idle_in_progress(cx(0), Reason::InProgress, IN_PROGRESS);
        s.set_prep_in_progress(cx(0), IN_PROGRESS);
        s.set_idle_in_progress(cx(1), Reason::Aborting, ABORTING);
        assert_eq!(
            kinds(&s),
            [ConditionType::PrepInProgress, ConditionType::Idle]
        );
    }

    #[test]
    fn idle_in_progress_is_only_abort_or_finalize() {
        let mut s = Status::default();
        s.set_idle_in_progress(cx(0), Reason::InProgress, IN_PROGRESS);
        assert!(!s.is_stage_in_progress(Stage::Idle));
        for r in [
            Reason::Aborting,
            Reason::AbortFailed,
            Reason::Finalizing,
            Reason::FinalizeFailed,
        ] {
            s.set_idle_in_progress(cx(0), r, "x");
            assert!(s.is_stage_in_progress(Stage::Idle), "{r:?}");
        }
        s.reset_to_idle(cx(0));
        assert!(!s.is_stage_in_progress(Stage::Idle));
        assert!(s.is_stage_completed(Stage::Idle));
    }

    #[test]
    fn clear_invalid_transitions() {
        let mut s = Status::default();
        s.reset_to_idle(cx(0));
        s.set_invalid_transition(cx(1), Stage::Upgrade, "Previous stage not succeeded");
        s.set_invalid_transition(cx(1), Stage::Idle, "Abort or finalize not allowed");
        s.clear_invalid_transitions(cx(2));
        assert!(s.condition(ConditionType::UpgradeInProgress).is_none());
        let idle = s.condition(ConditionType::Idle).unwrap();
        assert_eq!(idle.reason, Reason::InProgress);
        assert_eq!(idle.status, ConditionStatus::False);
    }

    #[test]
    fn reset_keeps_only_idle() {
        let mut s = Status::default();
        s.set_prep_in_progress(cx(0), IN_PROGRESS);
        s.set_prep_failed(cx(1), "boom");
        s.reset_to_idle(cx(2));
        assert_eq!(kinds(&s), [ConditionType::Idle]);
        assert!(s.is_stage_completed(Stage::Idle));
    }
}
