//! Prep: the whole step sequence, every step's failure, the seed checks, resume after a crash,
//! and the image cleanup rules.

use super::*;
use crate::seed::format::{CpuTopology as SeedCpu, SeedInfo, SeedSizes};
use crate::status::history::{PHASE_PRECACHE, PHASE_STATEROOT};
use crate::status::store::{DeploymentRecord, SeedRecord};

const DIGEST: &str = "sha256:5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const COMMIT: &str = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";

/// A seed that suits the host of `prep_facts`.
fn seed_info() -> SeedInfo {
    SeedInfo {
        version: "1.1.0".into(),
        os_id: "debian".into(),
        architecture: "x86_64".into(),
        cpu_topology: SeedCpu {
            sockets: 1,
            cores: 2,
            threads: 2,
        },
        kernel_args: vec!["root=LABEL=root".into(), "console=ttyS0".into()],
        has_proxy: false,
        has_fips: false,
        ip_family: "IPv4".into(),
        container_storage_mountpoint_target: "/dev/disk/by-label/containers".into(),
        agent_version: "0.1.0".into(),
        sno_hostname: "seed".into(),
        node_ips: vec![],
        ostree_commit: COMMIT.into(),
        stateroot: "debian".into(),
        sizes: SeedSizes {
            deployment_bytes: GIB,
            boot_bytes: 50 << 20,
            images_bytes: GIB,
            ..SeedSizes::default()
        },
        images: 3,
        created: "2026-11-21T10:00:00Z".into(),
    }
}

fn inspected(info: SeedInfo) -> Outcome {
    Outcome::Produced {
        message: "inspected".into(),
        data: StepData::Seed(Box::new(SeedRecord {
            manifest_digest: DIGEST.into(),
            info,
        })),
    }
}

fn ok() -> Outcome {
    Outcome::Succeeded {
        message: "done".into(),
    }
}

/// Plan, expect to run a step, record `outcome`; return the step and the new state.
fn step(d: &Desired, r: &Recorded, f: &Fixed, outcome: Outcome) -> (Step, Recorded) {
    let p = plan_ok(d, r, f);
    let Decision::Run(s) = p.decision.clone() else {
        panic!("expected a step, got {:?}", p.decision)
    };
    let mut rec = p.recorded;
    record(&mut rec, d, f, &s, &outcome, t(100), t(110)).unwrap();
    (s, rec)
}

/// The outcome a step of the sequence succeeds with.
fn success(s: &Step) -> Outcome {
    match s {
        Step::InspectSeed { .. } => inspected(seed_info()),
        Step::DeployStateroot { .. } => Outcome::Produced {
            message: "deployed".into(),
            data: StepData::Deployment(DeploymentRecord {
                checksum: COMMIT.into(),
                serial: 0,
            }),
        },
        Step::Precache { .. } => Outcome::Succeeded {
            message: "total: 3 (pulled: 1, skipped: 2, failed: 0)".into(),
        },
        _ => ok(),
    }
}

#[test]
fn every_step_runs_once_in_order_and_prep_completes() {
    let d = desired(Stage::Prep);
    let f = prep_facts(Some(72));
    let mut rec = idle_recorded();
    let mut names = vec![];
    loop {
        let p = plan_ok(&d, &rec, &f);
        let Decision::Run(s) = p.decision.clone() else {
            assert_eq!(
                p.decision,
                Decision::Converged {
                    summary: "Prep stage completed successfully".into()
                }
            );
            rec = p.recorded;
            break;
        };
        assert!(rec.status.is_stage_in_progress(Stage::Prep) || names.is_empty());
        names.push(s.name());
        match &s {
            Step::DeployStateroot {
                kargs,
                stateroot,
                commit,
                image,
            } => {
                assert_eq!(kargs, &["root=LABEL=root", "console=ttyS0", "ibu=1.1.0"]);
                assert_eq!(stateroot, "debian_1.1.0");
                assert_eq!(commit, COMMIT);
                assert_eq!(
                    image,
                    &format!("registry.example.com/seed@{DIGEST}"),
                    "pinned"
                );
            }
            Step::RestoreEtc { deployment, .. } => assert_eq!(deployment.checksum, COMMIT),
            Step::InspectSeed { image } => assert_eq!(image, "registry.example.com/seed:1.1.0"),
            _ => {}
        }
        let mut next = p.recorded;
        record(&mut next, &d, &f, &s, &success(&s), t(100), t(110)).unwrap();
        rec = next;
        assert!(names.len() < 20, "runaway: {names:?}");
    }
    assert_eq!(
        names,
        [
            "InspectSeed",
            "ImageCleanup",
            "FetchSeedMeta",
            "ImportOstree",
            "DeployStateroot",
            "RestoreVar",
            "RestoreEtc",
            "Precache"
        ]
    );
    assert_eq!(
        cond(&rec, ConditionType::PrepCompleted),
        (
            ConditionStatus::True,
            Reason::Completed,
            "Prep stage completed successfully".into()
        )
    );
    assert_eq!(
        cond(&rec, ConditionType::PrepInProgress),
        (
            ConditionStatus::False,
            Reason::Completed,
            "Prep completed: total: 3 (pulled: 1, skipped: 2, failed: 0)".into()
        )
    );
    assert_eq!(
        rec.status.valid_next_stages,
        vec![Stage::Idle, Stage::Upgrade]
    );
    let h = &rec.status.history[0];
    assert!(h.completion_time.is_some(), "stage history closed");
    let phases: Vec<(&str, bool)> = h
        .phases
        .iter()
        .map(|p| (p.phase.as_str(), p.completion_time.is_some()))
        .collect();
    assert_eq!(phases, [(PHASE_STATEROOT, true), (PHASE_PRECACHE, true)]);
    // Converged: a rerun changes nothing.
    let again = plan_ok(&d, &rec, &Fixed::default());
    assert_eq!(again.recorded, rec);
}

#[test]
fn every_failing_step_fails_prep_with_its_message() {
    let d = desired(Stage::Prep);
    let f = prep_facts(Some(10));
    let mut rec = idle_recorded();
    // Walk the sequence; at each step, a failure is tried on a copy.
    for _ in 0..10 {
        let p = plan_ok(&d, &rec, &f);
        let Decision::Run(s) = p.decision.clone() else {
            break;
        };
        let mut failed = p.recorded.clone();
        let fail = Outcome::Failed {
            message: format!("{} broke", s.name()),
        };
        record(&mut failed, &d, &f, &s, &fail, t(100), t(110)).unwrap();
        let want = if s.name() == "InspectSeed" {
            "failed to validate seed image info: InspectSeed broke".to_string()
        } else {
            format!("{} broke", s.name())
        };
        assert_eq!(
            cond(&failed, ConditionType::PrepInProgress),
            (ConditionStatus::False, Reason::Failed, want),
            "{}",
            s.name()
        );
        assert_eq!(failed.status.valid_next_stages, vec![Stage::Idle]);
        let after = plan_ok(&d, &failed, &Fixed::default());
        assert!(
            matches!(after.decision, Decision::Blocked { .. }),
            "{}",
            s.name()
        );
        let mut next = p.recorded;
        record(&mut next, &d, &f, &s, &success(&s), t(100), t(110)).unwrap();
        rec = next;
    }
}

#[test]
fn an_incompatible_seed_fails_prep_before_anything_is_pulled() {
    let d = desired(Stage::Prep);
    let f = prep_facts(Some(10));
    for (edit, message) in [
        (
            (|i: &mut SeedInfo| i.architecture = "aarch64".into()) as fn(&mut SeedInfo),
            "seed architecture aarch64, this host x86_64",
        ),
        (
            |i| i.version = "1.2.0".into(),
            "spec.seedImageRef.version is 1.1.0 but the seed is version 1.2.0",
        ),
        (
            |i| i.has_fips = true,
            "seed image has FIPS enabled but the cluster being upgraded does not",
        ),
        (
            |i| i.container_storage_mountpoint_target = "/dev/sdz".into(),
            "container storage mountpoint target mismatch: seed=/dev/sdz, cluster=/dev/disk/by-label/containers",
        ),
    ] {
        let mut info = seed_info();
        edit(&mut info);
        let (s, rec) = step(&d, &idle_recorded(), &f, inspected(info));
        assert_eq!(s.name(), "InspectSeed");
        let p = plan_ok(&d, &rec, &f);
        let Decision::Blocked { reason } = &p.decision else {
            panic!("{message}: {:?}", p.decision)
        };
        assert!(reason.contains(message), "{reason}");
        let (st, why, msg) = cond(&p.recorded, ConditionType::PrepInProgress);
        assert_eq!((st, why), (ConditionStatus::False, Reason::Failed));
        assert!(msg.contains(message), "{msg}");
    }
}

#[test]
fn a_crash_before_recording_repeats_only_that_step() {
    let d = desired(Stage::Prep);
    let f = prep_facts(Some(72));
    let mut rec = idle_recorded();
    for _ in 0..10 {
        let p = plan_ok(&d, &rec, &f);
        let Decision::Run(s) = p.decision.clone() else {
            break;
        };
        // The state persisted before the step; the process dies before recording. The next run
        // plans from the persisted state and must ask for the very same step.
        let persisted = p.recorded.clone();
        let again = plan_ok(&d, &persisted, &f);
        assert_eq!(again.decision, Decision::Run(s.clone()), "{}", s.name());
        let mut next = persisted;
        record(&mut next, &d, &f, &s, &success(&s), t(100), t(110)).unwrap();
        rec = next;
    }
    assert!(
        rec.status.is_stage_completed(Stage::Prep) || {
            let p = plan_ok(&d, &rec, &f);
            p.recorded.status.is_stage_completed(Stage::Prep)
        }
    );
}

#[test]
fn resumed_prep_does_not_redo_checks() {
    let d = desired(Stage::Prep);
    let (_, rec) = step(
        &d,
        &idle_recorded(),
        &prep_facts(Some(72)),
        inspected(seed_info()),
    );
    // Seed checks need host, storage and ostree facts; the host checks' footprint is not read
    // again.
    let f = Fixed {
        ostree: Some(ostree_old_booted()),
        storage: Some(storage(Some(72))),
        host: Some(host()),
        ..Fixed::default()
    };
    let p = plan_ok(&d, &rec, &f);
    assert_eq!(
        p.decision,
        Decision::Run(Step::ImageCleanup {
            threshold_percent: 50
        })
    );
    assert!(!f.asked.borrow().contains(&"footprint"));
    // And after the seed checks, only storage is read.
    let f2 = Fixed {
        storage: Some(storage(Some(72))),
        ..Fixed::default()
    };
    let again = plan_ok(&d, &p.recorded, &f2);
    assert_eq!(again.decision, p.decision);
    assert_eq!(*f2.asked.borrow(), vec!["storage"]);
}

#[test]
fn cleanup_is_skipped_below_the_threshold_or_when_disabled() {
    let (_, rec) = step(
        &desired(Stage::Prep),
        &idle_recorded(),
        &prep_facts(Some(10)),
        inspected(seed_info()),
    );
    let p = plan_ok(&desired(Stage::Prep), &rec, &prep_facts(Some(10)));
    assert!(
        matches!(p.decision, Decision::Run(Step::FetchSeedMeta { .. })),
        "{:?}",
        p.decision
    );
    let c = p
        .recorded
        .status
        .checks
        .iter()
        .find(|c| c.name == "ImageCleanup")
        .unwrap();
    assert_eq!(c.result, CheckResult::Skipped);
    assert!(c.message.contains("10%"), "{}", c.message);

    let mut d = desired(Stage::Prep);
    d.image_cleanup.on_prep = false;
    let p = plan_ok(&d, &rec, &prep_facts(Some(99)));
    assert!(matches!(
        p.decision,
        Decision::Run(Step::FetchSeedMeta { .. })
    ));
    let c = p
        .recorded
        .status
        .checks
        .iter()
        .find(|c| c.name == "ImageCleanup")
        .unwrap();
    assert!(c.message.contains("Disabled"));

    d.image_cleanup.on_prep = true;
    d.image_cleanup.disk_usage_threshold_percent = 80;
    let p = plan_ok(&d, &rec, &prep_facts(Some(72)));
    assert!(
        matches!(p.decision, Decision::Run(Step::FetchSeedMeta { .. })),
        "72% <= 80%"
    );
    let p = plan_ok(&d, &rec, &prep_facts(Some(81)));
    assert_eq!(
        p.decision,
        Decision::Run(Step::ImageCleanup {
            threshold_percent: 80
        })
    );
}

#[test]
fn cleanup_outcomes_never_fail_prep() {
    let d = desired(Stage::Prep);
    let f = prep_facts(Some(72));
    let (_, rec) = step(&d, &idle_recorded(), &f, inspected(seed_info()));
    let p = plan_ok(&d, &rec, &f);
    let Decision::Run(cleanup) = p.decision.clone() else {
        panic!()
    };
    for (outcome, want) in [
        (ok(), CheckResult::Passed),
        (
            Outcome::Warning {
                message: "ran out of candidates".into(),
            },
            CheckResult::Warning,
        ),
        (
            Outcome::Failed {
                message: "podman exploded".into(),
            },
            CheckResult::Warning,
        ),
    ] {
        let mut r = p.recorded.clone();
        record(&mut r, &d, &f, &cleanup, &outcome, t(100), t(110)).unwrap();
        let c = r
            .status
            .checks
            .iter()
            .find(|c| c.name == "ImageCleanup")
            .unwrap();
        assert_eq!(c.result, want);
        assert!(r.status.is_stage_in_progress(Stage::Prep));
        let next = plan_ok(&d, &r, &f);
        assert!(
            matches!(next.decision, Decision::Run(Step::FetchSeedMeta { .. })),
            "the next pass moves on even though usage is still high: {:?}",
            next.decision
        );
    }
}

#[test]
fn precache_progress_and_failure() {
    let d = desired(Stage::Prep);
    let f = prep_facts(Some(10));
    let mut rec = idle_recorded();
    loop {
        let p = plan_ok(&d, &rec, &f);
        let Decision::Run(s) = p.decision.clone() else {
            panic!("{:?}", p.decision)
        };
        if let Step::Precache { .. } = s {
            let mut failed = p.recorded.clone();
            let fail = Outcome::Failed {
                message: "precache failed: total: 3 (pulled: 1, skipped: 1, failed: 1); a: manifest unknown".into(),
            };
            record(&mut failed, &d, &f, &s, &fail, t(100), t(110)).unwrap();
            let (_, why, msg) = cond(&failed, ConditionType::PrepInProgress);
            assert_eq!(why, Reason::Failed);
            assert!(
                msg.contains("total: 3 (pulled: 1, skipped: 1, failed: 1)"),
                "{msg}"
            );
            break;
        }
        let mut next = p.recorded;
        record(&mut next, &d, &f, &s, &success(&s), t(100), t(110)).unwrap();
        rec = next;
    }
}
