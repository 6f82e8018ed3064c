//! Planner tables: (desired, recorded, facts) → (decision, recorded), per stage and situation.
//!
//! Facts are fixed values; a fact group that a case does not provide makes the planner fail, so
//! each case also proves which facts the decision needs (a converged Idle needs none).

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::{Result, bail};

use super::*;
use crate::facts::*;
use crate::spec::{ObjectRef, SeedRef};
use crate::status::store::PivotMode;
use crate::status::{CheckResult, ConditionStatus, ConditionType, Reason};

mod prep;
mod upgrade;

#[derive(Default)]
struct Fixed {
    ostree: Option<OstreeFacts>,
    storage: Option<StorageFacts>,
    host: Option<HostFacts>,
    footprint: Option<Footprint>,
    boot: Option<BootFacts>,
    asked: RefCell<Vec<&'static str>>,
}

impl Fixed {
    fn get<'a, T>(&'a self, what: &'static str, v: &'a Option<T>) -> Result<&'a T> {
        self.asked.borrow_mut().push(what);
        match v {
            Some(v) => Ok(v),
            None => bail!("fact group {what} not provided"),
        }
    }
}

impl Observe for Fixed {
    fn ostree(&self) -> Result<&OstreeFacts> {
        self.get("ostree", &self.ostree)
    }
    fn storage(&self) -> Result<&StorageFacts> {
        self.get("storage", &self.storage)
    }
    fn host(&self) -> Result<&HostFacts> {
        self.get("host", &self.host)
    }
    fn containers(&self) -> Result<&ContainerFacts> {
        bail!("container facts are not needed by the planner")
    }
    fn footprint(&self) -> Result<&Footprint> {
        self.get("footprint", &self.footprint)
    }
    fn boot(&self) -> Result<&BootFacts> {
        self.get("boot", &self.boot)
    }
}

const GIB: u64 = 1024 * 1024 * 1024;

fn deployment(index: usize, stateroot: &str, version: &str, booted: bool) -> DeploymentFacts {
    DeploymentFacts {
        index,
        stateroot: stateroot.into(),
        checksum: format!("{index:064x}"),
        serial: 0,
        version: Some(version.into()),
        pinned: false,
        staged: false,
        booted,
        default: index == 0,
        kargs: "root=LABEL=root".into(),
        refspec: None,
    }
}

fn ostree_old_booted() -> OstreeFacts {
    OstreeFacts {
        deployments: vec![deployment(0, "debian", "1.0.0", true)],
        stateroots: vec!["debian".into()],
        os_id: Some("debian".into()),
    }
}

fn usage(total_gib: u64, used_percent: u64) -> FsUsage {
    let blocks = total_gib * GIB / 4096;
    let avail = blocks * (100 - used_percent) / 100;
    FsUsage {
        block_size: 4096,
        blocks,
        blocks_free: avail,
        blocks_available: avail,
    }
}

fn storage(containers_percent: Option<u64>) -> StorageFacts {
    StorageFacts {
        container_storage_path: PathBuf::from("/var/lib/containers"),
        container_storage: containers_percent.map(|p| MountFacts {
            mount_point: PathBuf::from("/var/lib/containers"),
            source: "/dev/vdb".into(),
            fs_type: "xfs".into(),
            options: "rw,prjquota".into(),
            usage: usage(20, p),
        }),
        container_storage_unit_what: Some("/dev/disk/by-label/containers".into()),
        sysroot: usage(10, 50),
        boot: usage(1, 20),
    }
}

fn host() -> HostFacts {
    HostFacts {
        hostname: "node-1".into(),
        architecture: "x86_64".into(),
        cpu: CpuTopology {
            sockets: 1,
            cores: 2,
            threads: 2,
        },
        fips: false,
        proxy: false,
        node_ips: vec!["192.0.2.10".parse().unwrap()],
        ip_family: IpFamily::IPv4,
    }
}

fn prep_facts(containers_percent: Option<u64>) -> Fixed {
    Fixed {
        ostree: Some(ostree_old_booted()),
        storage: Some(storage(containers_percent)),
        host: Some(host()),
        footprint: Some(Footprint {
            deployment_bytes: GIB,
            boot_bytes: 60 * 1024 * 1024,
        }),
        ..Fixed::default()
    }
}

fn desired(stage: Stage) -> Desired {
    let mut d = Desired::idle();
    d.stage = stage;
    d.seed = Some(SeedRef {
        image: "registry.example.com/seed:1.1.0".into(),
        version: "1.1.0".into(),
        pull_secret: Some(ObjectRef {
            name: "seed-pull-secret".into(),
            namespace: "openshift-lifecycle-agent".into(),
        }),
    });
    d
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix(1_700_000_000 + secs)
}

fn plan_ok(d: &Desired, r: &Recorded, f: &dyn Observe) -> Plan {
    plan(d, r, f, t(100)).unwrap()
}

fn cond(r: &Recorded, k: ConditionType) -> (ConditionStatus, Reason, String) {
    let c = r.status.condition(k).unwrap_or_else(|| panic!("no {k:?}"));
    (c.status, c.reason, c.message.clone())
}

/// A node that became Idle at t(0).
fn idle_recorded() -> Recorded {
    let p = plan(
        &desired(Stage::Idle),
        &Recorded::default(),
        &Fixed::default(),
        t(0),
    )
    .unwrap();
    p.recorded
}

/// A node through Prep (checks passed, cleanup not needed) at t(100).
fn prep_running() -> (Recorded, Plan) {
    let r = idle_recorded();
    let p = plan_ok(&desired(Stage::Prep), &r, &prep_facts(Some(10)));
    (r, p)
}

fn prep_completed() -> Recorded {
    let (_, p) = prep_running();
    let mut r = p.recorded;
    r.status.set_prep_completed(
        Ctx {
            generation: r.generation,
            now: t(200),
        },
        "Prep stage completed successfully",
    );
    r
}

#[test]
fn fresh_node_becomes_idle_without_reading_facts() {
    let f = Fixed::default();
    let p = plan(&desired(Stage::Idle), &Recorded::default(), &f, t(0)).unwrap();
    assert_eq!(
        p.decision,
        Decision::Converged {
            summary: "Idle".into()
        }
    );
    assert_eq!(
        cond(&p.recorded, ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(p.recorded.generation, 1);
    assert_eq!(p.recorded.status.observed_generation, 1);
    assert_eq!(p.recorded.status.valid_next_stages, vec![Stage::Prep]);
    assert!(f.asked.borrow().is_empty(), "asked {:?}", f.asked.borrow());
}

#[test]
fn converged_rerun_changes_nothing_and_reads_nothing() {
    let r = idle_recorded();
    let f = Fixed::default();
    let p = plan(&desired(Stage::Idle), &r, &f, t(500)).unwrap();
    assert_eq!(
        p.recorded, r,
        "a converged run must not change the recorded state"
    );
    assert!(matches!(p.decision, Decision::Converged { .. }));
    assert!(f.asked.borrow().is_empty());
}

#[test]
fn failing_checks_fail_prep() {
    struct Case {
        name: &'static str,
        facts: Fixed,
        seed_version: &'static str,
        message: &'static str,
    }
    let mut tiny = prep_facts(Some(10));
    tiny.footprint = Some(Footprint {
        deployment_bytes: 9 * GIB,
        boot_bytes: 1,
    });
    let mut tiny_boot = prep_facts(Some(10));
    tiny_boot.footprint = Some(Footprint {
        deployment_bytes: 1,
        boot_bytes: GIB,
    });
    let cases = vec![
        Case {
            name: "no separate container storage",
            facts: prep_facts(None),
            seed_version: "1.1.0",
            message: "container storage mountpoint target not found",
        },
        Case {
            name: "seed not newer",
            facts: prep_facts(Some(10)),
            seed_version: "1.0.0",
            message: "seed OCP version (1.0.0) must be higher than current OCP version (1.0.0)",
        },
        Case {
            name: "seed older",
            facts: prep_facts(Some(10)),
            seed_version: "0.9.9",
            message: "seed OCP version (0.9.9) must be higher than current OCP version (1.0.0)",
        },
        Case {
            name: "sysroot too small",
            facts: tiny,
            seed_version: "1.1.0",
            message: "not enough free space on /sysroot: 5.0 GiB available, 9.9 GiB needed",
        },
        Case {
            name: "boot too small",
            facts: tiny_boot,
            seed_version: "1.1.0",
            message: "not enough free space on /boot: 819.2 MiB available, 1.1 GiB needed",
        },
    ];
    for c in cases {
        let mut d = desired(Stage::Prep);
        d.seed.as_mut().unwrap().version = c.seed_version.into();
        let p = plan_ok(&d, &idle_recorded(), &c.facts);
        let Decision::Blocked { reason } = &p.decision else {
            panic!("{}: {:?}", c.name, p.decision)
        };
        assert!(reason.contains(c.message), "{}: {reason}", c.name);
        let (st, why, msg) = cond(&p.recorded, ConditionType::PrepInProgress);
        assert_eq!(
            (st, why),
            (ConditionStatus::False, Reason::Failed),
            "{}",
            c.name
        );
        assert!(msg.contains(c.message), "{}: {msg}", c.name);
        assert_eq!(
            cond(&p.recorded, ConditionType::PrepCompleted),
            (ConditionStatus::False, Reason::Failed, "Prep failed".into())
        );
        assert_eq!(
            p.recorded.status.valid_next_stages,
            vec![Stage::Idle],
            "{}",
            c.name
        );
        assert!(
            p.recorded
                .status
                .checks
                .iter()
                .any(|k| k.result == CheckResult::Failed && k.message.contains(c.message)),
            "{}",
            c.name
        );
        // A rerun stays failed and runs nothing.
        let again = plan_ok(&d, &p.recorded, &Fixed::default());
        assert!(
            matches!(again.decision, Decision::Blocked { .. }),
            "{}",
            c.name
        );
        assert_eq!(
            again.recorded.status.conditions,
            p.recorded.status.conditions
        );
    }
}

#[test]
fn abort_after_prep_cleans_up_and_returns_to_idle() {
    let r = prep_completed();
    let d = desired(Stage::Idle);
    let f = Fixed {
        ostree: Some(ostree_old_booted()),
        ..Fixed::default()
    };
    let p = plan_ok(&d, &r, &f);
    assert_eq!(
        p.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Abort,
            keep_stateroot: "debian".into()
        })
    );
    assert_eq!(
        cond(&p.recorded, ConditionType::Idle),
        (ConditionStatus::False, Reason::Aborting, "Aborting".into())
    );
    assert_eq!(p.recorded.status.valid_next_stages, Vec::<Stage>::new());
    assert!(
        p.recorded.status.history.is_empty(),
        "Idle clears the history"
    );

    let Decision::Run(step) = &p.decision else {
        panic!()
    };
    let mut rec = p.recorded.clone();
    let ok = Outcome::Succeeded {
        message: "removed stateroot debian_1.1.0".into(),
    };
    record(&mut rec, &d, &f, step, &ok, t(100), t(120)).unwrap();
    assert_eq!(rec.status.conditions.len(), 1);
    assert_eq!(
        cond(&rec, ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(rec.status.valid_next_stages, vec![Stage::Prep]);
    assert_eq!(rec.target, None);
    let after = plan_ok(&d, &rec, &Fixed::default());
    assert_eq!(
        after.decision,
        Decision::Converged {
            summary: "Idle".into()
        }
    );
}

#[test]
fn failed_abort_waits_for_the_manual_cleanup_annotation() {
    let r = prep_completed();
    let mut d = desired(Stage::Idle);
    let f = Fixed {
        ostree: Some(ostree_old_booted()),
        ..Fixed::default()
    };
    let p = plan_ok(&d, &r, &f);
    let Decision::Run(step) = p.decision.clone() else {
        panic!()
    };
    let mut rec = p.recorded;
    let fail = Outcome::Failed {
        message: "failed to remove 1 stateroots".into(),
    };
    record(&mut rec, &d, &f, &step, &fail, t(100), t(110)).unwrap();
    let (st, why, msg) = cond(&rec, ConditionType::Idle);
    assert_eq!((st, why), (ConditionStatus::False, Reason::AbortFailed));
    assert_eq!(
        msg,
        "failed to remove 1 stateroots Perform cleanup manually then add \
         'lca.openshift.io/manual-cleanup-done' annotation to ibu CR to transition back to Idle"
    );
    assert!(rec.progress.manual_cleanup_armed);
    assert_eq!(rec.status.valid_next_stages, Vec::<Stage>::new());

    // Without the annotation: blocked, nothing run.
    let waiting = plan_ok(&d, &rec, &f);
    assert!(matches!(waiting.decision, Decision::Blocked { .. }));
    // With it: the cleanup runs again to verify.
    d.manual_cleanup_done = true;
    let retry = plan_ok(&d, &waiting.recorded, &f);
    assert_eq!(retry.decision, Decision::Run(step.clone()));
    // If it fails again while the annotation is still there, it is not taken as a new
    // acknowledgement.
    let mut rec2 = retry.recorded;
    record(&mut rec2, &d, &f, &step, &fail, t(120), t(130)).unwrap();
    assert!(!rec2.progress.manual_cleanup_armed);
    let stuck = plan_ok(&d, &rec2, &f);
    let Decision::Blocked { reason } = stuck.decision else {
        panic!()
    };
    assert!(reason.contains("add it again"), "{reason}");
    d.manual_cleanup_done = false;
    let rearmed = plan_ok(&d, &stuck.recorded, &f);
    assert!(rearmed.recorded.progress.manual_cleanup_armed);
}

#[test]
fn invalid_transition_is_recorded_and_nothing_runs() {
    let r = idle_recorded();
    for (to, msg) in [
        (Stage::Upgrade, "Previous stage not succeeded"),
        (Stage::Rollback, "Upgrade not started or already finalized"),
    ] {
        let f = Fixed::default();
        let p = plan_ok(&desired(to), &r, &f);
        let Decision::Blocked { reason } = &p.decision else {
            panic!("{:?}", p.decision)
        };
        assert!(reason.contains(msg), "{reason}");
        assert_eq!(
            cond(&p.recorded, ConditionType::in_progress(to)),
            (
                ConditionStatus::False,
                Reason::InvalidTransition,
                msg.into()
            )
        );
        assert_eq!(
            cond(&p.recorded, ConditionType::Idle),
            (ConditionStatus::True, Reason::Idle, "Idle".into()),
            "Idle untouched"
        );
        assert!(f.asked.borrow().is_empty(), "no facts needed to refuse");
    }
}

#[test]
fn spec_may_not_change_mid_stage() {
    let (_, p) = prep_running();
    let mut d = desired(Stage::Prep);
    d.seed.as_mut().unwrap().image = "registry.example.com/other:1.1.0".into();
    let err = plan(&d, &p.recorded, &Fixed::default(), t(300)).unwrap_err();
    assert_eq!(
        err.downcast_ref::<SpecRejected>().unwrap().0,
        "can not change spec.seedImageRef while ibu is in progress"
    );
    d.seed.as_mut().unwrap().image = "registry.example.com/seed:1.1.0".into();
    d.auto_rollback.init_monitor_timeout_seconds = 60;
    let err = plan(&d, &p.recorded, &Fixed::default(), t(300)).unwrap_err();
    assert!(err.to_string().contains("spec.autoRollbackOnFailure"));
    // Changing it while going back to Idle is allowed.
    d.stage = Stage::Idle;
    let f = Fixed {
        ostree: Some(ostree_old_booted()),
        ..Fixed::default()
    };
    plan(&d, &p.recorded, &f, t(300)).unwrap();
    // Annotations that tune cleanup may change any time.
    let mut d = desired(Stage::Prep);
    d.image_cleanup.disk_usage_threshold_percent = 70;
    plan(&d, &p.recorded, &prep_facts(Some(10)), t(300)).unwrap();
}

#[test]
fn generation_counts_spec_changes() {
    let r = idle_recorded();
    assert_eq!(r.generation, 1);
    let p = plan_ok(&desired(Stage::Idle), &r, &Fixed::default());
    assert_eq!(p.recorded.generation, 1);
    let (_, p) = prep_running();
    assert_eq!(p.recorded.generation, 2);
    assert_eq!(p.recorded.status.observed_generation, 2);
    let c = p
        .recorded
        .status
        .condition(ConditionType::PrepInProgress)
        .unwrap();
    assert_eq!(c.observed_generation, 2);
}

#[test]
fn finalize_after_upgrade_completed() {
    let mut r = prep_completed();
    let cx = Ctx {
        generation: r.generation,
        now: t(300),
    };
    r.status.set_upgrade_in_progress(cx, "In progress");
    r.status.set_upgrade_completed(cx);
    let f = Fixed {
        ostree: Some(OstreeFacts {
            deployments: vec![
                deployment(0, "debian_1.1.0", "1.1.0", true),
                deployment(1, "debian", "1.0.0", false),
            ],
            stateroots: vec!["debian".into(), "debian_1.1.0".into()],
            os_id: Some("debian".into()),
        }),
        ..Fixed::default()
    };
    let p = plan_ok(&desired(Stage::Idle), &r, &f);
    assert_eq!(
        p.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Finalize,
            keep_stateroot: "debian_1.1.0".into()
        })
    );
    assert_eq!(
        cond(&p.recorded, ConditionType::Idle),
        (
            ConditionStatus::False,
            Reason::Finalizing,
            "Finalizing".into()
        )
    );
}

#[test]
fn after_pivot_comes_from_the_recorded_target() {
    let mut r = prep_completed();
    let cx = Ctx {
        generation: r.generation,
        now: t(300),
    };
    r.status.set_upgrade_in_progress(cx, "In progress");
    let booted_new = Fixed {
        ostree: Some(OstreeFacts {
            deployments: vec![
                deployment(0, "debian_1.1.0", "1.1.0", true),
                deployment(1, "debian", "1.0.0", false),
            ],
            stateroots: vec!["debian".into(), "debian_1.1.0".into()],
            os_id: Some("debian".into()),
        }),
        ..Fixed::default()
    };
    // The user edits the seed while asking for Idle: the recorded target still decides.
    let mut d = desired(Stage::Idle);
    d.seed.as_mut().unwrap().version = "9.9.9".into();
    let p = plan_ok(&d, &r, &booted_new);
    let Decision::Blocked { reason } = &p.decision else {
        panic!("{:?}", p.decision)
    };
    assert!(
        reason.contains("Transition to Idle not allowed - Rollback first"),
        "{reason}"
    );
    assert_eq!(p.recorded.status.valid_next_stages, vec![Stage::Rollback]);

    let booted_old = Fixed {
        ostree: Some(ostree_old_booted()),
        ..Fixed::default()
    };
    let p = plan_ok(&d, &r, &booted_old);
    assert!(matches!(
        p.decision,
        Decision::Run(Step::Cleanup {
            kind: CleanupKind::Abort,
            ..
        })
    ));
}

#[test]
fn stateroot_names() {
    assert_eq!(stateroot_name("debian", "1.1.0"), "debian_1.1.0");
    assert_eq!(stateroot_name("rhcos", "4.16.0-rc.1"), "rhcos_4.16.0_rc.1");
    assert_eq!(stateroot_name("", "1+build/x"), "ibu_1_build_x");
}
