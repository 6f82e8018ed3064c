//! Is this host fit to be a seed? A pure decision over facts and ibu's recorded state.
//!
//! A seed is copied onto many hosts, so it must be a *settled* host: what is booted is what
//! will be captured, nothing is half-done. Every reason to refuse is collected (not just the
//! first), so the operator fixes them in one go; doubts that do not make the seed wrong are
//! warnings.
//!
//! Refused:
//! - no booted deployment (nothing to capture);
//! - `/var/lib/containers` is not its own mount: targets share their container storage between
//!   stateroots and compare its mount target with the seed's (LCA's rule, LCA §4);
//! - an ibu upgrade is in progress (recorded status not `Idle` True): the seed would capture a
//!   host between two states; a host that never ran ibu (no recorded conditions) is idle;
//! - a staged deployment: it would be finalized at the next shutdown, so the booted tree is not
//!   what the host runs next;
//! - the booted commit has no `version` metadata: a seed's version is its commit's, and targets
//!   name the seed by it;
//! - the booted deployment has no os-release `ID` (targets name the new stateroot after it).
//!
//! Warned: more than one stateroot (only the booted one is captured), a default deployment
//! that is not the booted one (the host would boot something else next).

use crate::facts::{OstreeFacts, StorageFacts};
use crate::spec::Stage;
use crate::status::store::Recorded;
use crate::status::{ConditionStatus, ConditionType};

/// The verdict: refusals make collection fail, warnings are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub refusals: Vec<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// Decide whether the host described by the facts and `recorded` can be a seed.
pub fn validate(ostree: &OstreeFacts, storage: &StorageFacts, recorded: &Recorded) -> Verdict {
    let mut v = Verdict::default();

    if storage.container_storage.is_none() {
        v.refusals.push(format!(
            "the seed host must have a separate /var/lib/containers mount: {} is not a mount \
             point (targets share container storage between stateroots and must match the \
             seed's mount; mount a filesystem there, e.g. with var-lib-containers.mount)",
            storage.container_storage_path.display()
        ));
    }

    if let Some(state) = upgrade_state(recorded) {
        v.refusals.push(format!(
            "an ibu upgrade is in progress on this host ({state}); a seed must be a settled \
             host: finish or abort it (stage Idle) before creating a seed"
        ));
    }

    for d in ostree.deployments.iter().filter(|d| d.staged) {
        v.refusals.push(format!(
            "deployment {} {} ({}) is staged and would be finalized at the next shutdown; \
             reboot into it or undeploy it before creating a seed",
            d.stateroot,
            d.dirname(),
            d.version.as_deref().unwrap_or("no version")
        ));
    }

    match ostree.booted() {
        None => v
            .refusals
            .push("no booted deployment: a seed captures the booted ostree deployment".to_string()),
        Some(b) => {
            if b.version.is_none() {
                v.refusals.push(format!(
                    "the booted commit {} (deployment {} {}) has no \"version\" metadata; a \
                     seed's version is its commit's (commit with \
                     --add-metadata-string=version=X)",
                    b.checksum,
                    b.stateroot,
                    b.dirname()
                ));
            }
            if ostree.os_id.is_none() {
                v.refusals.push(format!(
                    "the booted deployment {} {} has no ID in its os-release; targets name the \
                     seed's stateroot after it",
                    b.stateroot,
                    b.dirname()
                ));
            }
            if !b.default
                && let Some(next) = ostree.deployments.first()
            {
                v.warnings.push(format!(
                    "the booted deployment {} {} is not the default: the host would boot {} {} \
                     next; the seed captures the booted one",
                    b.stateroot,
                    b.dirname(),
                    next.stateroot,
                    next.dirname()
                ));
            }
            if ostree.stateroots.len() > 1 {
                v.warnings.push(format!(
                    "the sysroot has {} stateroots ({}); only the booted one ({}) goes into the \
                     seed",
                    ostree.stateroots.len(),
                    ostree.stateroots.join(", "),
                    b.stateroot
                ));
            }
        }
    }
    v
}

/// `None` when ibu is idle on this host; else a description of the recorded state.
///
/// Stricter than reading `Idle` alone: any stage condition still recorded, or a recorded
/// upgrade target, means ibu has not finished with this host, whatever `Idle` says.
fn upgrade_state(recorded: &Recorded) -> Option<String> {
    let status = &recorded.status;
    let idle = status.condition(ConditionType::Idle);
    // Aborting or finalizing (or their failures): the stage conditions still show what is
    // being undone, but what happens now is the cleanup.
    if status.is_stage_in_progress(Stage::Idle)
        && let Some(c) = idle
    {
        return Some(format!("Idle in progress: {}", c.message));
    }
    for stage in [Stage::Rollback, Stage::Upgrade, Stage::Prep] {
        if status.is_stage_in_progress(stage) {
            return Some(format!("{stage} in progress"));
        }
        if status.is_stage_failed(stage) {
            return Some(format!("{stage} failed"));
        }
        if status.is_stage_completed(stage) {
            return Some(format!("{stage} completed, not finalized"));
        }
    }
    if let Some(t) = &recorded.target {
        return Some(format!(
            "target {} {} recorded in stateroot {}",
            t.image, t.version, t.stateroot
        ));
    }
    if status.conditions.is_empty() {
        // ibu never ran an upgrade here.
        return None;
    }
    match idle {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) => Some(format!("Idle is False: {}", c.message)),
        None => Some("no Idle condition recorded".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{DeploymentFacts, FsUsage, MountFacts};
    use crate::status::Timestamp;
    use crate::status::conditions::Ctx;
    use crate::status::store::Target;
    use std::path::PathBuf;

    fn deployment(stateroot: &str, index: usize, booted: bool) -> DeploymentFacts {
        DeploymentFacts {
            index,
            stateroot: stateroot.into(),
            checksum: format!("{index}").repeat(64),
            serial: 0,
            version: Some("1.0.0".into()),
            pinned: false,
            staged: false,
            booted,
            default: index == 0,
            kargs: "root=LABEL=root ostree=/ostree/boot.1/x/y/0".into(),
            refspec: Some("test/old".into()),
        }
    }

    fn ostree() -> OstreeFacts {
        OstreeFacts {
            deployments: vec![deployment("debian", 0, true)],
            stateroots: vec!["debian".into()],
            os_id: Some("debian".into()),
        }
    }

    fn storage(mounted: bool) -> StorageFacts {
        let path = PathBuf::from("/var/lib/containers");
        StorageFacts {
            container_storage: mounted.then(|| MountFacts {
                mount_point: path.clone(),
                source: "/dev/vdb".into(),
                fs_type: "xfs".into(),
                options: "rw".into(),
                usage: FsUsage::default(),
            }),
            container_storage_path: path,
            container_storage_unit_what: None,
            sysroot: FsUsage::default(),
            boot: FsUsage::default(),
        }
    }

    fn cx() -> Ctx {
        Ctx {
            generation: 1,
            now: Timestamp::from_unix(1_700_000_000),
        }
    }

    fn idle() -> Recorded {
        let mut r = Recorded::default();
        r.status.reset_to_idle(cx());
        r
    }

    #[test]
    fn refusals_and_warnings() {
        type Edit = fn(&mut OstreeFacts, &mut StorageFacts, &mut Recorded);
        let cases: Vec<(&str, Edit, &[&str], &[&str])> = vec![
            ("settled idle host", |_, _, _| {}, &[], &[]),
            (
                "never ran ibu",
                |_, _, r| *r = Recorded::default(),
                &[],
                &[],
            ),
            (
                "container storage not a mount",
                |_, s, _| *s = storage(false),
                &[
                    "the seed host must have a separate /var/lib/containers mount: /var/lib/containers is not a mount point",
                ],
                &[],
            ),
            (
                "prep in progress",
                |_, _, r| r.status.set_prep_in_progress(cx(), "In progress"),
                &["an ibu upgrade is in progress on this host (Prep in progress)"],
                &[],
            ),
            (
                "prep completed",
                |_, _, r| r.status.set_prep_completed(cx(), "Prep completed"),
                &["an ibu upgrade is in progress on this host (Prep completed, not finalized)"],
                &[],
            ),
            (
                "upgrade failed",
                |_, _, r| r.status.set_upgrade_failed(cx(), "boom"),
                &["an ibu upgrade is in progress on this host (Upgrade failed)"],
                &[],
            ),
            (
                "aborting",
                |_, _, r| {
                    r.status
                        .set_idle_in_progress(cx(), crate::status::Reason::Aborting, "Aborting")
                },
                &["an ibu upgrade is in progress on this host (Idle in progress: Aborting)"],
                &[],
            ),
            (
                "target recorded while idle",
                |_, _, r| {
                    r.target = Some(Target {
                        stateroot: "debian_1.1.0".into(),
                        version: "1.1.0".into(),
                        image: "quay.io/x/seed:1.1.0".into(),
                        seed: None,
                        deployment: None,
                    })
                },
                &["(target quay.io/x/seed:1.1.0 1.1.0 recorded in stateroot debian_1.1.0)"],
                &[],
            ),
            (
                "staged deployment",
                |o, _, _| {
                    let mut d = deployment("debian", 0, false);
                    d.staged = true;
                    d.version = Some("1.0.1".into());
                    o.deployments[0].index = 1;
                    o.deployments[0].default = false;
                    o.deployments.insert(0, d);
                },
                &[
                    "deployment debian 0000000000000000000000000000000000000000000000000000000000000000.0 (1.0.1) is staged",
                ],
                &["the booted deployment debian"],
            ),
            (
                "no version",
                |o, _, _| o.deployments[0].version = None,
                &[
                    "the booted commit 0000000000000000000000000000000000000000000000000000000000000000 (deployment debian 0000000000000000000000000000000000000000000000000000000000000000.0) has no \"version\" metadata",
                ],
                &[],
            ),
            (
                "no booted deployment",
                |o, _, _| o.deployments[0].booted = false,
                &["no booted deployment"],
                &[],
            ),
            (
                "no os id",
                |o, _, _| o.os_id = None,
                &["has no ID in its os-release"],
                &[],
            ),
            (
                "two stateroots",
                |o, _, _| {
                    o.deployments.push(deployment("debian_1.1.0", 1, false));
                    o.stateroots.push("debian_1.1.0".into());
                },
                &[],
                &[
                    "the sysroot has 2 stateroots (debian, debian_1.1.0); only the booted one (debian) goes into the seed",
                ],
            ),
        ];
        for (name, edit, refusals, warnings) in cases {
            let (mut o, mut s, mut r) = (ostree(), storage(true), idle());
            edit(&mut o, &mut s, &mut r);
            let v = validate(&o, &s, &r);
            assert_eq!(v.refusals.len(), refusals.len(), "{name}: {v:#?}");
            for (got, want) in v.refusals.iter().zip(refusals.iter()) {
                assert!(got.contains(want), "{name}: {got:?} lacks {want:?}");
            }
            assert_eq!(v.warnings.len(), warnings.len(), "{name}: {v:#?}");
            for (got, want) in v.warnings.iter().zip(warnings.iter()) {
                assert!(got.contains(want), "{name}: {got:?} lacks {want:?}");
            }
            assert_eq!(v.is_ok(), refusals.is_empty(), "{name}");
        }
    }

    #[test]
    fn all_refusals_are_reported_together() {
        let mut o = ostree();
        o.deployments[0].version = None;
        let mut r = idle();
        r.status.set_prep_in_progress(cx(), "In progress");
        let v = validate(&o, &storage(false), &r);
        assert_eq!(v.refusals.len(), 3, "{v:#?}");
    }
}
