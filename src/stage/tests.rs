//! Every situation of LCA's stage table × every desired stage × before/after pivot.

use super::*;
use crate::status::Timestamp;

fn cx() -> Ctx {
    Ctx {
        generation: 3,
        now: Timestamp::from_unix(1_700_000_000),
    }
}

fn accept(mut s: Status, to: Stage, pivot: bool) -> Status {
    let t = apply_transition(&mut s, to, &pivot, cx()).unwrap();
    assert!(
        matches!(t, Transition::Accepted { .. }),
        "setup {to}: {t:?}"
    );
    s
}

fn idle() -> Status {
    accept(Status::default(), Stage::Idle, false)
}
fn prep_in_progress() -> Status {
    accept(idle(), Stage::Prep, false)
}
fn prep_failed() -> Status {
    let mut s = prep_in_progress();
    s.set_prep_failed(cx(), "container storage mountpoint target not found");
    s
}
fn prep_completed() -> Status {
    let mut s = prep_in_progress();
    s.set_prep_completed(cx(), "Prep stage completed successfully");
    s
}
fn upgrade_in_progress() -> Status {
    accept(prep_completed(), Stage::Upgrade, false)
}
fn upgrade_failed() -> Status {
    let mut s = upgrade_in_progress();
    s.set_upgrade_failed(cx(), "boom");
    s
}
fn upgrade_completed() -> Status {
    let mut s = upgrade_in_progress();
    s.set_upgrade_completed(cx());
    s
}
fn rollback_in_progress() -> Status {
    accept(upgrade_completed(), Stage::Rollback, true)
}
fn rollback_failed() -> Status {
    let mut s = rollback_in_progress();
    s.set_rollback_failed(cx(), "boom");
    s
}
fn rollback_completed() -> Status {
    let mut s = rollback_in_progress();
    s.set_rollback_completed(cx());
    s
}
fn aborting() -> Status {
    accept(prep_completed(), Stage::Idle, false)
}
fn abort_failed() -> Status {
    let mut s = aborting();
    s.set_idle_in_progress(cx(), Reason::AbortFailed, "x");
    s
}
fn finalizing() -> Status {
    accept(upgrade_completed(), Stage::Idle, true)
}
fn finalize_failed() -> Status {
    let mut s = finalizing();
    s.set_idle_in_progress(cx(), Reason::FinalizeFailed, "x");
    s
}

use Stage::*;

/// (name, status, after pivot, valid next stages) — LCA's table §3, row by row.
fn situations() -> Vec<(&'static str, Status, bool, Vec<Stage>)> {
    vec![
        ("no status", Status::default(), false, vec![Idle]),
        ("idle", idle(), false, vec![Prep]),
        ("prep in progress", prep_in_progress(), false, vec![Idle]),
        ("prep failed", prep_failed(), false, vec![Idle]),
        (
            "prep completed",
            prep_completed(),
            false,
            vec![Idle, Upgrade],
        ),
        (
            "upgrade in progress, before pivot",
            upgrade_in_progress(),
            false,
            vec![Idle],
        ),
        (
            "upgrade in progress, after pivot",
            upgrade_in_progress(),
            true,
            vec![Rollback],
        ),
        (
            "upgrade failed, before pivot",
            upgrade_failed(),
            false,
            vec![Idle],
        ),
        (
            "upgrade failed, after pivot",
            upgrade_failed(),
            true,
            vec![Rollback],
        ),
        (
            "upgrade completed",
            upgrade_completed(),
            true,
            vec![Idle, Rollback],
        ),
        ("rollback in progress", rollback_in_progress(), true, vec![]),
        ("rollback failed", rollback_failed(), true, vec![]),
        (
            "rollback completed",
            rollback_completed(),
            false,
            vec![Idle],
        ),
        ("aborting", aborting(), false, vec![]),
        ("abort failed", abort_failed(), false, vec![]),
        ("finalizing", finalizing(), true, vec![]),
        ("finalize failed", finalize_failed(), true, vec![]),
    ]
}

#[test]
fn valid_next_stages_match_lca_table() {
    for (name, s, pivot, want) in situations() {
        assert_eq!(valid_next_stages(&s, &pivot).unwrap(), want, "{name}");
    }
}

/// LCA's rejection message for a move to `to` in a situation.
fn expected_rejection(s: &Status, to: Stage, pivot: bool) -> &'static str {
    match to {
        Prep | Upgrade => MSG_PREVIOUS_NOT_SUCCEEDED,
        Rollback => MSG_UPGRADE_NOT_STARTED,
        Idle if s.is_stage_failed(Rollback) => MSG_IDLE_ROLLBACK_FAILED,
        Idle if pivot && s.is_stage_in_progress(Rollback) => MSG_IDLE_ROLLBACK_IN_PROGRESS,
        Idle if pivot => MSG_IDLE_ROLLBACK_FIRST,
        Idle => MSG_ABORT_OR_FINALIZE_NOT_ALLOWED,
    }
}

#[test]
fn every_transition_from_every_situation() {
    for (name, before, pivot, valid) in situations() {
        for to in Stage::ALL {
            let mut s = before.clone();
            if !transition_requested(&s, to) {
                // Asking for the stage already in progress or done is not a transition.
                assert!(
                    s.is_stage_in_progress(to)
                        || (to == Idle && s.is_stage_completed(Idle))
                        || (to != Idle && s.is_stage_completed_or_failed(to)),
                    "{name} -> {to}: not requested but neither in progress nor done"
                );
                continue;
            }
            let t = apply_transition(&mut s, to, &pivot, cx()).unwrap();
            if valid.contains(&to) {
                assert!(
                    matches!(t, Transition::Accepted { .. }),
                    "{name} -> {to}: {t:?}"
                );
                if to != Idle {
                    assert_eq!(s.in_progress_stage(), Some(to), "{name} -> {to}");
                }
                assert!(
                    !s.conditions
                        .iter()
                        .any(|c| c.reason == Reason::InvalidTransition),
                    "{name} -> {to}: stale InvalidTransition left"
                );
            } else {
                let want = expected_rejection(&before, to, pivot);
                assert_eq!(t, Transition::Rejected { message: want }, "{name} -> {to}");
                let c = s.condition(ConditionType::in_progress(to)).unwrap();
                assert_eq!(c.reason, Reason::InvalidTransition, "{name} -> {to}");
                assert_eq!(c.status, ConditionStatus::False);
                assert_eq!(c.message, want);
                // Nothing but the desired stage's in-progress condition changed.
                let mut others_after = s.conditions.clone();
                others_after.retain(|c| c.kind != ConditionType::in_progress(to));
                let mut others_before = before.conditions.clone();
                others_before.retain(|c| c.kind != ConditionType::in_progress(to));
                assert_eq!(others_after, others_before, "{name} -> {to}");
            }
        }
    }
}

#[test]
fn idle_after_prep_aborts_and_after_upgrade_finalizes() {
    let mut s = prep_completed();
    let t = apply_transition(&mut s, Idle, &false, cx()).unwrap();
    assert_eq!(
        t,
        Transition::Accepted {
            to: Idle,
            idle: Some(IdleKind::Abort)
        }
    );
    let idle = s.condition(ConditionType::Idle).unwrap();
    assert_eq!(
        (idle.reason, idle.message.as_str()),
        (Reason::Aborting, ABORTING)
    );

    let mut s = upgrade_completed();
    let t = apply_transition(&mut s, Idle, &true, cx()).unwrap();
    assert_eq!(
        t,
        Transition::Accepted {
            to: Idle,
            idle: Some(IdleKind::Finalize)
        }
    );
    assert_eq!(
        s.condition(ConditionType::Idle).unwrap().reason,
        Reason::Finalizing
    );

    let mut s = rollback_completed();
    let t = apply_transition(&mut s, Idle, &false, cx()).unwrap();
    assert_eq!(
        t,
        Transition::Accepted {
            to: Idle,
            idle: Some(IdleKind::Finalize)
        }
    );

    let mut s = upgrade_failed();
    let t = apply_transition(&mut s, Idle, &false, cx()).unwrap();
    assert_eq!(
        t,
        Transition::Accepted {
            to: Idle,
            idle: Some(IdleKind::Abort)
        }
    );
}

#[test]
fn fresh_node_becomes_idle() {
    let mut s = Status::default();
    assert!(transition_requested(&s, Idle));
    apply_transition(&mut s, Idle, &false, cx()).unwrap();
    let c = s.condition(ConditionType::Idle).unwrap();
    assert_eq!(
        (c.status, c.reason, c.message.as_str()),
        (ConditionStatus::True, Reason::Idle, "Idle")
    );
    assert!(!transition_requested(&s, Idle));
    assert_eq!(valid_next_stages(&s, &false).unwrap(), vec![Prep]);
}

#[test]
fn rollback_marks_upgrade_failed_rollback_requested() {
    let s = rollback_in_progress();
    let u = s.condition(ConditionType::UpgradeCompleted).unwrap();
    assert_eq!(
        (u.status, u.message.as_str()),
        (ConditionStatus::False, "Rollback requested")
    );
}

#[test]
fn invalid_then_valid_clears_invalid_transition() {
    let mut s = idle();
    let t = apply_transition(&mut s, Upgrade, &false, cx()).unwrap();
    assert_eq!(
        t,
        Transition::Rejected {
            message: MSG_PREVIOUS_NOT_SUCCEEDED
        }
    );
    let t = apply_transition(&mut s, Prep, &false, cx()).unwrap();
    assert!(matches!(t, Transition::Accepted { .. }));
    assert!(s.condition(ConditionType::UpgradeInProgress).is_none());
}

/// The pivot fact is consulted only where LCA consults it.
#[test]
fn after_pivot_is_asked_only_when_needed() {
    struct Panics;
    impl AfterPivot for Panics {
        fn after_pivot(&self) -> Result<bool> {
            panic!("after_pivot consulted")
        }
    }
    for s in [
        Status::default(),
        idle(),
        prep_in_progress(),
        prep_completed(),
        upgrade_completed(),
    ] {
        valid_next_stages(&s, &Panics).unwrap();
    }
}
