//! Upgrade, rollback and finalize: the step sequences before and after the pivot, health
//! waits, uncontrolled rollback, the init monitor, post-pivot failures, manual rollback.

use super::*;
use crate::facts::boot::SystemState;
use crate::status::store::DeploymentRecord;

const NEW: &str = "debian_1.1.0";

fn new_dep() -> DeploymentRecord {
    DeploymentRecord {
        checksum: format!("{:064x}", 1),
        serial: 0,
    }
}

/// Prep completed, with the new deployment recorded.
fn prepared() -> Recorded {
    prepared_for(&desired(Stage::Upgrade))
}

/// Prep completed for a spec like `d` (the spec may not change after Prep but for the stage).
fn prepared_for(d: &Desired) -> Recorded {
    let mut r = prep_completed();
    r.target.as_mut().unwrap().deployment = Some(new_dep());
    let mut accepted = d.clone();
    accepted.stage = Stage::Prep;
    r.accepted = Some(accepted);
    r
}

fn boot(id: &str, uptime: u64, state: &str) -> BootFacts {
    BootFacts {
        boot_id: id.into(),
        uptime_secs: uptime,
        system: SystemState::parse(state),
    }
}

fn old_booted(b: BootFacts) -> Fixed {
    Fixed {
        ostree: Some(OstreeFacts {
            deployments: vec![
                deployment(0, "debian", "1.0.0", true),
                deployment(1, NEW, "1.1.0", false),
            ],
            stateroots: vec!["debian".into(), NEW.into()],
            os_id: Some("debian".into()),
        }),
        boot: Some(b),
        ..Fixed::default()
    }
}

fn new_booted(b: BootFacts) -> Fixed {
    Fixed {
        ostree: Some(OstreeFacts {
            deployments: vec![
                deployment(0, NEW, "1.1.0", true),
                deployment(1, "debian", "1.0.0", false),
            ],
            stateroots: vec!["debian".into(), NEW.into()],
            os_id: Some("debian".into()),
        }),
        boot: Some(b),
        ..Fixed::default()
    }
}

fn with_workloads(mut d: Desired) -> Desired {
    d.oadp_content = vec![ObjectRef {
        name: "oadp".into(),
        namespace: "openshift-adp".into(),
    }];
    d.extra_manifests = vec![ObjectRef {
        name: "em".into(),
        namespace: "openshift-lifecycle-agent".into(),
    }];
    d
}

fn success(s: &Step) -> Outcome {
    match s {
        Step::StageManifests { .. } => Outcome::Produced {
            message: "staged".into(),
            data: StepData::Waves(vec!["1".into(), "unset".into()]),
        },
        Step::Pivot { .. } => Outcome::Produced {
            message: "pivot".into(),
            data: StepData::Pivot(PivotMode::Default),
        },
        _ => Outcome::Succeeded {
            message: "ok".into(),
        },
    }
}

/// Run steps with success until the planner stops asking; the step markers and the last plan.
fn drive(
    d: &Desired,
    rec: &mut Recorded,
    f: &Fixed,
    stop_after: Option<&str>,
) -> (Vec<String>, Plan) {
    let mut names = vec![];
    for _ in 0..40 {
        let p = plan_ok(d, rec, f);
        let Decision::Run(s) = p.decision.clone() else {
            *rec = p.recorded.clone();
            return (names, p);
        };
        names.push(s.marker());
        *rec = p.recorded.clone();
        record(rec, d, f, &s, &success(&s), t(100), t(110)).unwrap();
        if stop_after == Some(s.name()) {
            let p = plan_ok(d, rec, f);
            return (names, p);
        }
    }
    panic!("no end: {names:?}")
}

/// Through the pivot reboot, in boot b1.
fn pivoted(d: &Desired) -> Recorded {
    let mut rec = prepared_for(d);
    drive(
        d,
        &mut rec,
        &old_booted(boot("b1", 500, "running")),
        Some("Reboot"),
    );
    rec
}

#[test]
fn upgrade_runs_every_step_once_in_order_and_completes_after_the_pivot() {
    let d = with_workloads(desired(Stage::Upgrade));
    let mut rec = prepared_for(&d);
    let before = old_booted(boot("b1", 500, "running"));
    let (names, p) = drive(&d, &mut rec, &before, None);
    assert_eq!(
        names,
        [
            "HealthChecks",
            "Backup",
            "CarryIdentity",
            "RegenerateCrypto",
            "StageManifests",
            "WriteAutoRollback",
            "SaveState",
            "Pivot",
            "Reboot"
        ]
    );
    assert!(
        matches!(&p.decision, Decision::Wait { reason, .. } if reason.contains("waiting for the reboot")),
        "{:?}",
        p.decision
    );
    let up = rec.upgrade.clone().unwrap();
    assert_eq!(up.old_stateroot, "debian");
    assert_eq!(up.reboot.as_ref().unwrap().boot_id, "b1");
    assert_eq!(up.manifest_waves, ["1", "unset"]);
    assert_eq!(up.pivot, Some(PivotMode::Default));
    assert_eq!(
        rec.status.valid_next_stages,
        vec![Stage::Idle],
        "before the pivot: abort"
    );

    // The state SaveState copied is what the new stateroot starts from; here the same record.
    let after = new_booted(boot("b2", 40, "running"));
    let (names, p) = drive(&d, &mut rec, &after, None);
    assert_eq!(
        names,
        [
            "CommitPivot",
            "ApplyIdentity",
            "ApplyManifests:1",
            "ApplyManifests:unset",
            "RestoreBackups",
            "PostPivotHealthChecks",
            "FinishUpgrade"
        ]
    );
    assert_eq!(
        p.decision,
        Decision::Converged {
            summary: "Upgrade completed".into()
        }
    );
    assert_eq!(
        cond(&rec, ConditionType::UpgradeCompleted),
        (
            ConditionStatus::True,
            Reason::Completed,
            "Upgrade completed".into()
        )
    );
    assert_eq!(
        cond(&rec, ConditionType::UpgradeInProgress),
        (
            ConditionStatus::False,
            Reason::Completed,
            "Upgrade completed".into()
        )
    );
    assert_eq!(
        rec.status.valid_next_stages,
        vec![Stage::Idle, Stage::Rollback]
    );
    let h = rec
        .status
        .history
        .iter()
        .find(|h| h.stage == Stage::Upgrade)
        .unwrap();
    assert!(h.completion_time.is_some());
    let phases: Vec<(&str, bool)> = h
        .phases
        .iter()
        .map(|p| (p.phase.as_str(), p.completion_time.is_some()))
        .collect();
    assert_eq!(phases, [("PrePivot", true), ("PostPivot", true)]);

    // Idle finalizes, keeping the booted (new) stateroot.
    let idle = desired(Stage::Idle);
    let p = plan_ok(&idle, &rec, &after);
    assert_eq!(
        p.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Finalize,
            keep_stateroot: NEW.into()
        })
    );
}

#[test]
fn empty_oadp_and_manifests_skip_their_steps() {
    let d = desired(Stage::Upgrade);
    let mut rec = prepared();
    let (names, _) = drive(&d, &mut rec, &old_booted(boot("b1", 9, "running")), None);
    assert!(
        !names.iter().any(|n| n == "Backup" || n == "StageManifests"),
        "{names:?}"
    );
    let (names, _) = drive(&d, &mut rec, &new_booted(boot("b2", 9, "running")), None);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("ApplyManifests") || n == "RestoreBackups")
    );
}

#[test]
fn unhealthy_systems_wait_with_lcas_message() {
    let d = desired(Stage::Upgrade);
    for (state, retry, wake_on, fragment) in [
        (
            "starting",
            super::super::upgrade::STARTUP_WAIT_SECS,
            WakeOn::SystemStarted,
            "systemd reports the system starting",
        ),
        (
            "degraded: a.service",
            30,
            WakeOn::Timer,
            "failed units a.service",
        ),
    ] {
        let p = plan_ok(&d, &prepared(), &old_booted(boot("b1", 9, state)));
        assert_eq!(
            p.decision,
            Decision::Wait {
                reason: format!("Waiting for system to stabilize: {fragment}").replace(
                    "Waiting for system to stabilize: failed",
                    "Waiting for system to stabilize: systemd reports the system degraded: failed"
                ),
                retry_after_secs: retry,
                wake_on,
            }
        );
        let (st, why, msg) = cond(&p.recorded, ConditionType::UpgradeInProgress);
        assert_eq!((st, why), (ConditionStatus::True, Reason::InProgress));
        assert!(
            msg.starts_with("Waiting for system to stabilize: "),
            "{msg}"
        );
    }
    // A failing required drop-in: wait 30 s, then run the checks again.
    let f = old_booted(boot("b1", 9, "running"));
    let p = plan_ok(&d, &prepared(), &f);
    let Decision::Run(s) = p.decision else {
        panic!()
    };
    let mut rec = p.recorded;
    let fail = Outcome::Failed {
        message: "required health check 10-db failed (exit status: 1)".into(),
    };
    record(&mut rec, &d, &f, &s, &fail, t(100), t(100)).unwrap();
    let p = plan(&d, &rec, &f, t(110)).unwrap();
    assert!(
        matches!(
            p.decision,
            Decision::Wait {
                retry_after_secs: 20,
                ..
            }
        ),
        "{:?}",
        p.decision
    );
    let p = plan(&d, &rec, &f, t(131)).unwrap();
    assert_eq!(
        p.decision,
        Decision::Run(Step::HealthChecks {
            phase: Phase::PrePivot
        })
    );
}

#[test]
fn a_new_boot_in_the_old_stateroot_is_an_uncontrolled_rollback() {
    let d = desired(Stage::Upgrade);
    let rec = pivoted(&d);
    // Same boot: still waiting; after five minutes the reboot is asked again.
    let same = old_booted(boot("b1", 900, "running"));
    assert!(matches!(
        plan(&d, &rec, &same, t(200)).unwrap().decision,
        Decision::Wait { .. }
    ));
    assert!(matches!(
        plan(&d, &rec, &same, t(1000)).unwrap().decision,
        Decision::Run(Step::Reboot {
            kind: RebootKind::Pivot,
            ..
        })
    ));
    let p = plan_ok(&d, &rec, &old_booted(boot("b2", 30, "running")));
    assert!(
        matches!(&p.decision, Decision::Blocked { reason } if reason.contains("Uncontrolled rollback"))
    );
    assert_eq!(
        cond(&p.recorded, ConditionType::UpgradeInProgress),
        (
            ConditionStatus::False,
            Reason::Failed,
            "Uncontrolled rollback".into()
        )
    );
    assert_eq!(
        cond(&p.recorded, ConditionType::UpgradeCompleted),
        (
            ConditionStatus::False,
            Reason::Failed,
            "Upgrade failed".into()
        )
    );
    assert_eq!(p.recorded.status.valid_next_stages, vec![Stage::Idle]);
    // Idle aborts, keeping the old stateroot.
    let p = plan_ok(
        &desired(Stage::Idle),
        &p.recorded,
        &old_booted(boot("b2", 31, "running")),
    );
    assert_eq!(
        p.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Abort,
            keep_stateroot: "debian".into()
        })
    );
}

fn rollback_steps(d: &Desired, rec: &mut Recorded, f: &Fixed) -> Vec<String> {
    let (names, _) = drive(d, rec, f, Some("RollbackReboot"));
    names
}

#[test]
fn the_init_monitor_rolls_back_after_its_timeout_unless_disabled() {
    let mut d = desired(Stage::Upgrade);
    d.auto_rollback.init_monitor_timeout_seconds = 600;
    let rec = pivoted(&d);
    let p = plan_ok(&d, &rec, &new_booted(boot("b2", 599, "running")));
    assert_eq!(
        p.decision,
        Decision::Run(Step::CommitPivot {
            stateroot: NEW.into(),
            deployment: new_dep()
        })
    );
    let late = new_booted(boot("b2", 600, "running"));
    let mut r = rec.clone();
    let names = rollback_steps(&d, &mut r, &late);
    assert_eq!(
        names,
        ["RollbackSaveState", "RollbackSetDefault", "RollbackReboot"]
    );
    let msg = "Rollback due to LCA Init Monitor timeout, after 10m0s";
    assert_eq!(
        cond(&r, ConditionType::UpgradeInProgress),
        (ConditionStatus::False, Reason::Failed, msg.into())
    );
    assert!(
        r.status
            .condition(ConditionType::RollbackInProgress)
            .is_none()
    );
    // Back in the old stateroot (the copy RollbackSaveState wrote is this record).
    let p = plan_ok(&d, &r, &old_booted(boot("b3", 20, "running")));
    assert!(
        matches!(&p.decision, Decision::Blocked { reason } if reason.contains(msg)),
        "{:?}",
        p.decision
    );
    assert_eq!(p.recorded.upgrade.as_ref().unwrap().rollback, None);
    assert_eq!(p.recorded.status.valid_next_stages, vec![Stage::Idle]);

    d.auto_rollback.init_monitor = false;
    let rec = pivoted(&d);
    let p = plan_ok(&d, &rec, &late);
    assert!(matches!(
        p.decision,
        Decision::Run(Step::CommitPivot { .. })
    ));
}

#[test]
fn post_pivot_failures_roll_back_unless_disabled() {
    let d = desired(Stage::Upgrade);
    let rec = pivoted(&d);
    let f = new_booted(boot("b2", 30, "running"));
    let mut r = rec.clone();
    drive(&d, &mut r, &f, Some("CommitPivot"));
    let p = plan_ok(&d, &r, &f);
    assert_eq!(p.decision, Decision::Run(Step::ApplyIdentity));
    let mut failed = p.recorded.clone();
    let boom = Outcome::Failed {
        message: "identity check failed: /etc/machine-id is not what was carried".into(),
    };
    record(&mut failed, &d, &f, &Step::ApplyIdentity, &boom, t(1), t(2)).unwrap();
    let (_, _, msg) = cond(&failed, ConditionType::UpgradeInProgress);
    assert_eq!(
        msg,
        "Rollback due to postpivot failure: identity check failed: /etc/machine-id is not what was carried"
    );
    let p = plan_ok(&d, &failed, &f);
    assert!(matches!(
        p.decision,
        Decision::Run(Step::RollbackSaveState { .. })
    ));

    let mut off = d.clone();
    off.auto_rollback.post_reboot_config = false;
    let mut r = pivoted(&off);
    drive(&off, &mut r, &f, Some("CommitPivot"));
    let p = plan_ok(&off, &r, &f);
    let mut failed = p.recorded.clone();
    record(
        &mut failed,
        &off,
        &f,
        &Step::ApplyIdentity,
        &boom,
        t(1),
        t(2),
    )
    .unwrap();
    let p = plan_ok(&off, &failed, &f);
    assert!(
        matches!(p.decision, Decision::Blocked { .. }),
        "{:?}",
        p.decision
    );
    assert_eq!(p.recorded.status.valid_next_stages, vec![Stage::Rollback]);
    // A manual rollback takes over.
    let mut rb = p.recorded.clone();
    let mut manual = off.clone();
    manual.stage = Stage::Rollback;
    let names = rollback_steps(&manual, &mut rb, &f);
    assert_eq!(
        names,
        ["RollbackSaveState", "RollbackSetDefault", "RollbackReboot"]
    );
}

#[test]
fn manual_rollback_after_upgrade_completed_then_idle_finalizes() {
    let d = desired(Stage::Upgrade);
    let mut rec = pivoted(&d);
    let f = new_booted(boot("b2", 30, "running"));
    drive(&d, &mut rec, &f, None);
    assert!(rec.status.is_stage_completed(Stage::Upgrade));
    let rb = desired(Stage::Rollback);
    let names = rollback_steps(&rb, &mut rec, &f);
    assert_eq!(
        names,
        ["RollbackSaveState", "RollbackSetDefault", "RollbackReboot"]
    );
    assert_eq!(
        cond(&rec, ConditionType::UpgradeInProgress),
        (
            ConditionStatus::False,
            Reason::Failed,
            "Rollback requested".into()
        )
    );
    assert_eq!(rec.status.valid_next_stages, Vec::<Stage>::new());
    // Not rebooted yet: wait.
    assert!(matches!(
        plan_ok(&rb, &rec, &f).decision,
        Decision::Wait { .. }
    ));
    let old = old_booted(boot("b3", 20, "running"));
    let p = plan_ok(&rb, &rec, &old);
    assert_eq!(
        p.decision,
        Decision::Converged {
            summary: "Rollback completed".into()
        }
    );
    assert_eq!(
        cond(&p.recorded, ConditionType::RollbackCompleted),
        (
            ConditionStatus::True,
            Reason::Completed,
            "Rollback completed".into()
        )
    );
    assert_eq!(p.recorded.status.valid_next_stages, vec![Stage::Idle]);
    let again = plan_ok(&rb, &p.recorded, &old);
    assert!(matches!(again.decision, Decision::Converged { .. }));
    let fin = plan_ok(&desired(Stage::Idle), &p.recorded, &old);
    assert_eq!(
        fin.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Finalize,
            keep_stateroot: "debian".into()
        })
    );
    // Rebooting into the new stateroot again instead fails the rollback.
    let p = plan_ok(&rb, &rec, &new_booted(boot("b3", 20, "running")));
    assert!(
        matches!(&p.decision, Decision::Blocked { reason } if reason.contains("Rollback failed"))
    );
    assert_eq!(p.recorded.status.valid_next_stages, Vec::<Stage>::new());
}

#[test]
fn a_failing_pre_pivot_step_fails_upgrade_and_idle_aborts() {
    let d = desired(Stage::Upgrade);
    let f = old_booted(boot("b1", 9, "running"));
    let mut rec = prepared();
    drive(&d, &mut rec, &f, Some("HealthChecks"));
    let p = plan_ok(&d, &rec, &f);
    let Decision::Run(s) = p.decision else {
        panic!()
    };
    assert_eq!(s.name(), "CarryIdentity");
    let mut r = p.recorded;
    let boom = Outcome::Failed {
        message: "carrying hostname: disk full".into(),
    };
    record(&mut r, &d, &f, &s, &boom, t(1), t(2)).unwrap();
    assert_eq!(
        cond(&r, ConditionType::UpgradeInProgress),
        (
            ConditionStatus::False,
            Reason::Failed,
            "carrying hostname: disk full".into()
        )
    );
    assert_eq!(r.status.valid_next_stages, vec![Stage::Idle]);
    let p = plan_ok(&desired(Stage::Idle), &r, &f);
    assert!(matches!(
        p.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Abort,
            ..
        })
    ));
}
