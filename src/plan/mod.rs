//! The planner: a pure function of (desired, recorded, facts, now) that says what to do next.
//!
//! It mirrors one pass of LCA's `Reconcile`: count the generation, enforce the rules about what
//! may not change mid-stage, work out the valid next stages, accept or reject a requested
//! transition, and ask the handler of the stage in progress for its next step. Instead of doing
//! the work it returns a [`Decision`] — at most one mutating [`Step`], a wait, a block that needs
//! a human, or "converged" — together with the recorded state updated by everything that is pure
//! bookkeeping (conditions, checks, history). The executor persists that state, runs the step,
//! and hands the step's [`Outcome`] back to [`record`], also pure.
//!
//! Facts are read through [`Observe`], so the planner asks only for what its decision needs: a
//! converged Idle run reads no facts at all.

use std::cell::OnceCell;

use anyhow::Result;

use crate::facts::Observe;
use crate::spec::{Desired, Stage};
use crate::stage::{self, AfterPivot, Transition};
use crate::status::conditions::{self, Ctx};
use crate::status::store::{
    DeploymentRecord, PivotMode, Recorded, SeedRecord, Target, UpgradeRecord,
};
use crate::status::{CheckResult, ConditionType, Reason, StepRecord, StepResult, Timestamp};

mod idle;
mod postpivot;
mod prep;
mod prep_checks;
mod rollback;
#[cfg(test)]
mod tests;
mod upgrade;

pub use crate::checks::CheckOutcome;
pub use prep::{PREP_STEPS, pinned_image};
pub use prep_checks::{FREE_SPACE_MARGIN_PERCENT, prep_checks};
pub use upgrade::{UPGRADE_POST_PIVOT_STEPS, UPGRADE_PRE_PIVOT_STEPS, go_duration};

/// A mutating step. Each is idempotent: running it again after a crash converges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Read the seed's manifest and config (its labels) without pulling it, and record them.
    InspectSeed { image: String },
    /// Delete unused, unpinned container images until container storage is at or below the
    /// threshold (LCA §4.5).
    ImageCleanup { threshold_percent: u8 },
    /// Read the seed's metadata layer into ibu's workspace.
    FetchSeedMeta { image: String },
    /// Fetch the ostree objects this host lacks and import the seed's commit.
    ImportOstree {
        image: String,
        commit: String,
        stateroot: String,
    },
    /// `os-init` the new stateroot and deploy the commit there, not as the default.
    DeployStateroot {
        image: String,
        stateroot: String,
        commit: String,
        kargs: Vec<String>,
    },
    /// The seed's `/var` becomes the new stateroot's `/var`.
    RestoreVar { image: String, stateroot: String },
    /// The seed's `/etc` changes and deletions into the new deployment's `/etc`.
    RestoreEtc {
        image: String,
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Pull the seed's images (and any additional images) that are not present yet.
    Precache { image: String },
    /// Remove every stateroot but the booted one, and ibu's workspace (abort or finalize).
    Cleanup {
        kind: CleanupKind,
        keep_stateroot: String,
    },
    /// Upgrade: run the health-check drop-ins (`/etc/ibu/health-check/{required,wanted}.d`).
    HealthChecks { phase: Phase },
    /// Upgrade: back up what `oadpContent` names into the new stateroot, wave by wave.
    Backup { stateroot: String },
    /// Upgrade: the node's identity (hostname, machine-id, network, SSH keys, ...) and ibu
    /// itself into the new deployment's `/etc` and the new stateroot's `/var`.
    CarryIdentity {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Upgrade: replace private keys the new deployment got from the seed or its commit.
    RegenerateCrypto {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Upgrade: the extra manifests for the target version, grouped by wave, into the new
    /// stateroot.
    StageManifests { stateroot: String, version: String },
    /// Upgrade: the auto-rollback configuration and the init monitor into the new stateroot.
    WriteAutoRollback {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Upgrade: ibu's status and desired state into the new stateroot.
    SaveState {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Upgrade: make the bootloader start the new deployment next (once, or as the default).
    Pivot {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Reboot through systemd (into the new stateroot, or back for a rollback).
    Reboot { kind: RebootKind, message: String },
    /// Upgrade, after the pivot: the new deployment becomes the default for good.
    CommitPivot {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Upgrade, after the pivot: check the carried identity is in place and apply it to the
    /// running system.
    ApplyIdentity,
    /// Upgrade, after the pivot: apply one wave of the staged extra manifests.
    ApplyManifests { wave: String },
    /// Upgrade, after the pivot: restore the backups, wave by wave.
    RestoreBackups,
    /// Upgrade, after the pivot: remove the init monitor; the upgrade is complete.
    FinishUpgrade,
    /// Rollback: ibu's status and desired state into the old stateroot.
    RollbackSaveState {
        stateroot: String,
        deployment: DeploymentRecord,
    },
    /// Rollback: the old deployment becomes the default again.
    RollbackSetDefault {
        stateroot: String,
        deployment: DeploymentRecord,
    },
}

/// When health checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the pivot, in the old stateroot.
    PrePivot,
    /// After the pivot, in the new stateroot (LCA's deferred health checks).
    PostPivot,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PrePivot => "pre-pivot",
            Phase::PostPivot => "post-pivot",
        }
    }
}

/// Why ibu reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootKind {
    Pivot,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupKind {
    Abort,
    Finalize,
}

pub const STEP_PREP_CHECKS: &str = "PrepChecks";
pub const STEP_INSPECT_SEED: &str = "InspectSeed";
pub const STEP_SEED_CHECKS: &str = "SeedChecks";
pub const STEP_IMAGE_CLEANUP: &str = "ImageCleanup";
pub const STEP_FETCH_SEED_META: &str = "FetchSeedMeta";
pub const STEP_IMPORT_OSTREE: &str = "ImportOstree";
pub const STEP_DEPLOY_STATEROOT: &str = "DeployStateroot";
pub const STEP_RESTORE_VAR: &str = "RestoreVar";
pub const STEP_RESTORE_ETC: &str = "RestoreEtc";
pub const STEP_PRECACHE: &str = "Precache";
pub const STEP_HEALTH_CHECKS: &str = "HealthChecks";
pub const STEP_POST_PIVOT_HEALTH_CHECKS: &str = "PostPivotHealthChecks";
pub const STEP_BACKUP: &str = "Backup";
pub const STEP_CARRY_IDENTITY: &str = "CarryIdentity";
pub const STEP_REGENERATE_CRYPTO: &str = "RegenerateCrypto";
pub const STEP_STAGE_MANIFESTS: &str = "StageManifests";
pub const STEP_WRITE_AUTO_ROLLBACK: &str = "WriteAutoRollback";
pub const STEP_SAVE_STATE: &str = "SaveState";
pub const STEP_PIVOT: &str = "Pivot";
pub const STEP_REBOOT: &str = "Reboot";
pub const STEP_COMMIT_PIVOT: &str = "CommitPivot";
pub const STEP_APPLY_IDENTITY: &str = "ApplyIdentity";
pub const STEP_APPLY_MANIFESTS: &str = "ApplyManifests";
pub const STEP_RESTORE_BACKUPS: &str = "RestoreBackups";
pub const STEP_FINISH_UPGRADE: &str = "FinishUpgrade";
pub const STEP_ROLLBACK_SAVE_STATE: &str = "RollbackSaveState";
pub const STEP_ROLLBACK_SET_DEFAULT: &str = "RollbackSetDefault";
pub const STEP_ROLLBACK_REBOOT: &str = "RollbackReboot";

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::InspectSeed { .. } => STEP_INSPECT_SEED,
            Step::ImageCleanup { .. } => STEP_IMAGE_CLEANUP,
            Step::FetchSeedMeta { .. } => STEP_FETCH_SEED_META,
            Step::ImportOstree { .. } => STEP_IMPORT_OSTREE,
            Step::DeployStateroot { .. } => STEP_DEPLOY_STATEROOT,
            Step::RestoreVar { .. } => STEP_RESTORE_VAR,
            Step::RestoreEtc { .. } => STEP_RESTORE_ETC,
            Step::Precache { .. } => STEP_PRECACHE,
            Step::Cleanup {
                kind: CleanupKind::Abort,
                ..
            } => "Abort",
            Step::Cleanup {
                kind: CleanupKind::Finalize,
                ..
            } => "Finalize",
            Step::HealthChecks {
                phase: Phase::PrePivot,
            } => STEP_HEALTH_CHECKS,
            Step::HealthChecks {
                phase: Phase::PostPivot,
            } => STEP_POST_PIVOT_HEALTH_CHECKS,
            Step::Backup { .. } => STEP_BACKUP,
            Step::CarryIdentity { .. } => STEP_CARRY_IDENTITY,
            Step::RegenerateCrypto { .. } => STEP_REGENERATE_CRYPTO,
            Step::StageManifests { .. } => STEP_STAGE_MANIFESTS,
            Step::WriteAutoRollback { .. } => STEP_WRITE_AUTO_ROLLBACK,
            Step::SaveState { .. } => STEP_SAVE_STATE,
            Step::Pivot { .. } => STEP_PIVOT,
            Step::Reboot {
                kind: RebootKind::Pivot,
                ..
            } => STEP_REBOOT,
            Step::Reboot {
                kind: RebootKind::Rollback,
                ..
            } => STEP_ROLLBACK_REBOOT,
            Step::CommitPivot { .. } => STEP_COMMIT_PIVOT,
            Step::ApplyIdentity => STEP_APPLY_IDENTITY,
            Step::ApplyManifests { .. } => STEP_APPLY_MANIFESTS,
            Step::RestoreBackups => STEP_RESTORE_BACKUPS,
            Step::FinishUpgrade => STEP_FINISH_UPGRADE,
            Step::RollbackSaveState { .. } => STEP_ROLLBACK_SAVE_STATE,
            Step::RollbackSetDefault { .. } => STEP_ROLLBACK_SET_DEFAULT,
        }
    }

    /// The progress marker a finished step leaves: its name, and the wave for a wave step.
    pub fn marker(&self) -> String {
        match self {
            Step::ApplyManifests { wave } => manifests_marker(wave),
            _ => self.name().to_string(),
        }
    }

    pub fn stage(&self) -> Stage {
        match self {
            Step::Cleanup { .. } => Stage::Idle,
            Step::InspectSeed { .. }
            | Step::ImageCleanup { .. }
            | Step::FetchSeedMeta { .. }
            | Step::ImportOstree { .. }
            | Step::DeployStateroot { .. }
            | Step::RestoreVar { .. }
            | Step::RestoreEtc { .. }
            | Step::Precache { .. } => Stage::Prep,
            Step::RollbackSaveState { .. }
            | Step::RollbackSetDefault { .. }
            | Step::Reboot {
                kind: RebootKind::Rollback,
                ..
            } => Stage::Rollback,
            _ => Stage::Upgrade,
        }
    }

    /// What the step is about to do, for `ibu plan` and the logs.
    pub fn describe(&self) -> String {
        match self {
            Step::InspectSeed { image } => {
                format!("read the labels of seed {image} and check it against this host")
            }
            Step::ImageCleanup { threshold_percent } => format!(
                "delete unused container images until container storage is at or below {threshold_percent}%"
            ),
            Step::FetchSeedMeta { image } => format!("read the metadata layer of seed {image}"),
            Step::ImportOstree {
                commit, stateroot, ..
            } => format!(
                "fetch the ostree objects of commit {commit} this host lacks and import it for stateroot {stateroot}"
            ),
            Step::DeployStateroot {
                stateroot, kargs, ..
            } => format!(
                "create stateroot {stateroot} and deploy the seed's commit there, not as default (kernel arguments: {})",
                kargs.join(" ")
            ),
            Step::RestoreVar { stateroot, .. } => {
                format!("restore the seed's /var into stateroot {stateroot}")
            }
            Step::RestoreEtc { stateroot, .. } => {
                format!("apply the seed's /etc changes to the new deployment in {stateroot}")
            }
            Step::Precache { .. } => {
                "pull the seed's container images that are not present yet".into()
            }
            Step::Cleanup {
                kind,
                keep_stateroot,
            } => format!(
                "{}: remove every stateroot except the booted {keep_stateroot:?}, and ibu's workspace",
                match kind {
                    CleanupKind::Abort => "abort",
                    CleanupKind::Finalize => "finalize",
                }
            ),
            Step::HealthChecks { phase } => format!(
                "run the {} health checks (/etc/ibu/health-check/required.d and wanted.d)",
                phase.as_str()
            ),
            Step::Backup { stateroot } => {
                format!("back up what oadpContent names into stateroot {stateroot}")
            }
            Step::CarryIdentity { stateroot, .. } => format!(
                "carry this node's identity (hostname, machine-id, network, SSH keys, ...) and ibu into stateroot {stateroot}"
            ),
            Step::RegenerateCrypto { stateroot, .. } => format!(
                "replace the private keys stateroot {stateroot} got from the seed with new ones"
            ),
            Step::StageManifests { stateroot, version } => format!(
                "stage the extra manifests for version {version}, by wave, into stateroot {stateroot}"
            ),
            Step::WriteAutoRollback { stateroot, .. } => format!(
                "write the auto-rollback configuration and the init monitor into stateroot {stateroot}"
            ),
            Step::SaveState { stateroot, .. } => {
                format!("save ibu's status and desired state into stateroot {stateroot}")
            }
            Step::Pivot { stateroot, .. } => {
                format!("make the bootloader start stateroot {stateroot} next")
            }
            Step::Reboot { message, .. } => format!("reboot: {message}"),
            Step::CommitPivot { stateroot, .. } => {
                format!("make the booted deployment of {stateroot} the default")
            }
            Step::ApplyIdentity => {
                "check the carried identity and apply it to the running system".into()
            }
            Step::ApplyManifests { wave } => format!("apply the extra manifests of wave {wave}"),
            Step::RestoreBackups => "restore the backups, wave by wave".into(),
            Step::FinishUpgrade => "remove the init monitor; the upgrade is complete".into(),
            Step::RollbackSaveState { stateroot, .. } => {
                format!("save ibu's status and desired state into stateroot {stateroot}")
            }
            Step::RollbackSetDefault { stateroot, .. } => {
                format!("make the deployment of stateroot {stateroot} the default again")
            }
        }
    }
}

/// The marker of the [`Step::ApplyManifests`] of `wave`.
pub fn manifests_marker(wave: &str) -> String {
    format!("{STEP_APPLY_MANIFESTS}:{wave}")
}

/// What the planner decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run this step now.
    Run(Step),
    /// Nothing to do yet; look again when `wake_on` happens, at the latest after
    /// `retry_after_secs`.
    Wait {
        reason: String,
        retry_after_secs: u64,
        wake_on: WakeOn,
    },
    /// Nothing ibu can do until a human changes something (the desired stage, the host).
    Blocked { reason: String },
    /// The desired state is reached.
    Converged { summary: String },
}

/// What ends a wait. The planner names the event so that the shell can wait for it instead of
/// polling: after the pivot reboot, the deferred health checks wait for systemd to finish
/// starting, and a fixed timer would add up to its whole period to the upgrade's downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeOn {
    /// Nothing ibu can watch: look again after the delay.
    Timer,
    /// systemd leaving its "starting" state (`systemctl is-system-running --wait`).
    SystemStarted,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The recorded state with all bookkeeping of this pass applied; persist it before running
    /// the step so that a crash mid-step leaves a truthful status.
    pub recorded: Recorded,
    pub decision: Decision,
    /// Steps expected after the decided one within the current stage, for `ibu plan`.
    pub upcoming: Vec<&'static str>,
}

/// A desired-state change that LCA's API would have refused; ibu refuses it the same way and
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecRejected(pub String);

/// What a step learned that the recorded state must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepData {
    Seed(Box<SeedRecord>),
    Deployment(DeploymentRecord),
    /// The waves of extra manifests staged, in apply order.
    Waves(Vec<String>),
    /// How the pivot boots the new stateroot.
    Pivot(PivotMode),
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        message: String,
    },
    /// Succeeded, with something to record.
    Produced {
        message: String,
        data: StepData,
    },
    /// Finished, but with something the user should see.
    Warning {
        message: String,
    },
    Failed {
        message: String,
    },
}

impl Outcome {
    pub fn message(&self) -> &str {
        match self {
            Outcome::Succeeded { message }
            | Outcome::Produced { message, .. }
            | Outcome::Warning { message }
            | Outcome::Failed { message } => message,
        }
    }
}

/// Name of the stateroot an upgrade to `version` goes into: `<os id>_<version>` with characters
/// other than `[A-Za-z0-9._]` replaced by `_` (LCA: `rhcos_<version with - as _>`).
pub fn stateroot_name(os_id: &str, version: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let os = if os_id.is_empty() { "ibu" } else { os_id };
    format!("{}_{}", clean(os), clean(version))
}

/// "Is the booted deployment in the new stateroot?", from facts, asked lazily.
struct Pivot<'a> {
    facts: &'a dyn Observe,
    target: Option<&'a Target>,
    desired: &'a Desired,
    cache: OnceCell<bool>,
}

impl<'a> Pivot<'a> {
    fn new(facts: &'a dyn Observe, target: Option<&'a Target>, desired: &'a Desired) -> Self {
        Pivot {
            facts,
            target,
            desired,
            cache: OnceCell::new(),
        }
    }
}

impl AfterPivot for Pivot<'_> {
    fn after_pivot(&self) -> Result<bool> {
        if let Some(v) = self.cache.get() {
            return Ok(*v);
        }
        let ostree = self.facts.ostree()?;
        let target = match (self.target, &self.desired.seed) {
            (Some(t), _) => Some(t.stateroot.clone()),
            (None, Some(seed)) => Some(stateroot_name(
                ostree.os_id.as_deref().unwrap_or_default(),
                &seed.version,
            )),
            (None, None) => None,
        };
        let v = target.is_some_and(|t| ostree.booted_stateroot() == Some(t.as_str()));
        Ok(*self.cache.get_or_init(|| v))
    }
}

/// LCA's CRD rules: while a stage is in progress these spec fields may not change.
fn check_immutable(recorded: &Recorded, desired: &Desired) -> Result<(), SpecRejected> {
    let Some(old) = &recorded.accepted else {
        return Ok(());
    };
    if recorded.status.conditions.is_empty()
        || recorded.status.is_stage_completed(Stage::Idle)
        || desired.stage == Stage::Idle
    {
        return Ok(());
    }
    let rules: [(&str, bool); 4] = [
        ("spec.seedImageRef", old.seed == desired.seed),
        ("spec.oadpContent", old.oadp_content == desired.oadp_content),
        (
            "spec.extraManifests",
            old.extra_manifests == desired.extra_manifests,
        ),
        (
            "spec.autoRollbackOnFailure",
            old.auto_rollback == desired.auto_rollback,
        ),
    ];
    match rules.iter().find(|(_, same)| !same) {
        Some((field, _)) => Err(SpecRejected(format!(
            "can not change {field} while ibu is in progress"
        ))),
        None => Ok(()),
    }
}

/// Everything a stage handler needs.
pub(crate) struct Pass<'a> {
    pub desired: &'a Desired,
    pub facts: &'a dyn Observe,
    pub rec: Recorded,
    pub cx: Ctx,
}

impl Pass<'_> {
    pub fn record_check(&mut self, name: &str, result: CheckResult, message: String) {
        let checks = &mut self.rec.status.checks;
        checks.retain(|c| c.name != name);
        checks.push(crate::status::Check {
            name: name.to_string(),
            result,
            message,
            time: self.cx.now,
        });
    }
}

/// One planning pass. Errors are facts that could not be gathered; a rejected spec change is a
/// [`SpecRejected`] inside the error.
pub fn plan(
    desired: &Desired,
    recorded: &Recorded,
    facts: &dyn Observe,
    now: Timestamp,
) -> Result<Plan> {
    check_immutable(recorded, desired)?;
    let (generation, digest) = recorded.next_generation(desired);
    let mut rec = recorded.clone();
    rec.generation = generation;
    rec.spec_digest = Some(digest);
    rec.accepted = Some(desired.clone());
    let cx = Ctx { generation, now };

    let target = recorded.target.clone();
    let pivot = Pivot::new(facts, target.as_ref(), desired);

    rec.status.valid_next_stages = stage::valid_next_stages(&rec.status, &pivot)?;
    let mut rejected = None;
    if stage::transition_requested(&rec.status, desired.stage) {
        match stage::apply_transition(&mut rec.status, desired.stage, &pivot, cx)? {
            Transition::Accepted { to, idle } => on_accepted(&mut rec, desired, facts, to, idle)?,
            Transition::Rejected { message } => {
                rejected = Some(format!(
                    "invalid transition to {}: {message}",
                    desired.stage
                ))
            }
        }
    }

    let in_progress = rec.status.in_progress_stage();
    // LCA's handleStage: open the stage's history entry; Idle clears the history.
    if in_progress.is_some() {
        if desired.stage == Stage::Idle {
            rec.status.reset_history();
        } else {
            rec.status.start_stage_history(desired.stage, now);
        }
    }

    let mut pass = Pass {
        desired,
        facts,
        rec,
        cx,
    };
    let (decision, upcoming) = match in_progress {
        Some(Stage::Idle) => (idle::next(&mut pass)?, vec![]),
        Some(Stage::Prep) => prep::next(&mut pass)?,
        Some(Stage::Upgrade) => upgrade::next(&mut pass)?,
        Some(Stage::Rollback) => rollback::next(&mut pass)?,
        None if rollback::pending(&pass.rec) => rollback::next(&mut pass)?,
        None => (settled(&pass.rec, desired), vec![]),
    };
    // As in LCA, a refused transition does not stop the stage in progress; say both.
    let decision = match (rejected, decision) {
        (Some(r), Decision::Blocked { reason }) if in_progress.is_some() => Decision::Blocked {
            reason: format!("{r}; meanwhile: {reason}"),
        },
        (_, d) => d,
    };
    let mut rec = pass.rec;
    rec.status.valid_next_stages = stage::valid_next_stages(&rec.status, &pivot)?;
    rec.status.stamp_generation(desired.stage, generation);
    Ok(Plan {
        recorded: rec,
        decision,
        upcoming,
    })
}

/// Bookkeeping when a transition is accepted: a fresh attempt of the new stage.
fn on_accepted(
    rec: &mut Recorded,
    desired: &Desired,
    facts: &dyn Observe,
    to: Stage,
    idle: Option<stage::IdleKind>,
) -> Result<()> {
    rec.progress.reset(Some(to));
    rec.status.checks.clear();
    match (to, idle) {
        (Stage::Prep, _) => {
            if let Some(seed) = &desired.seed {
                let os_id = facts.ostree()?.os_id.clone().unwrap_or_default();
                rec.target = Some(Target {
                    stateroot: stateroot_name(&os_id, &seed.version),
                    version: seed.version.clone(),
                    image: seed.image.clone(),
                    seed: None,
                    deployment: None,
                });
            }
        }
        (Stage::Upgrade, _) => {
            let ostree = facts.ostree()?;
            if let Some(b) = ostree.booted() {
                rec.upgrade = Some(UpgradeRecord {
                    old_stateroot: b.stateroot.clone(),
                    old_deployment: DeploymentRecord {
                        checksum: b.checksum.clone(),
                        serial: b.serial,
                    },
                    pivot: None,
                    reboot: None,
                    manifest_waves: Vec::new(),
                    rollback: None,
                });
            }
        }
        (Stage::Rollback, _) => {
            // A requested rollback (also one that takes over an automatic one in flight).
            if let Some(u) = rec.upgrade.as_mut() {
                u.rollback = Some(crate::status::store::RollbackRecord {
                    auto_reason: None,
                    reboot: None,
                });
            }
        }
        (Stage::Idle, Some(stage::IdleKind::Initial)) => {
            rec.target = None;
            rec.upgrade = None;
        }
        _ => {}
    }
    Ok(())
}

/// No stage in progress: the desired stage is done, failed, or was refused.
fn settled(rec: &Recorded, desired: &Desired) -> Decision {
    let st = &rec.status;
    let stage = desired.stage;
    let next = || {
        let v: Vec<&str> = st.valid_next_stages.iter().map(|s| s.as_str()).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    if let Some(c) = st.condition(ConditionType::in_progress(stage))
        && c.reason == Reason::InvalidTransition
    {
        return Decision::Blocked {
            reason: format!(
                "invalid transition to {stage}: {}; valid next stages: {}",
                c.message,
                next()
            ),
        };
    }
    if st.is_stage_completed(stage) {
        let what = st
            .condition(ConditionType::completed(stage))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        return Decision::Converged { summary: what };
    }
    if st.is_stage_failed(stage) {
        let why = st
            .condition(ConditionType::in_progress(stage))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        return Decision::Blocked {
            reason: format!("{stage} failed: {why}; valid next stages: {}", next()),
        };
    }
    Decision::Blocked {
        reason: format!(
            "stage {stage} is neither in progress nor done; valid next stages: {}",
            next()
        ),
    }
}

/// Apply a step's outcome to the recorded state. Pure but for the (cached) pivot fact that
/// the valid next stages may need.
pub fn record(
    rec: &mut Recorded,
    desired: &Desired,
    facts: &dyn Observe,
    step: &Step,
    outcome: &Outcome,
    started: Timestamp,
    now: Timestamp,
) -> Result<()> {
    let cx = Ctx {
        generation: rec.generation,
        now,
    };
    match (step, step.stage()) {
        (Step::Cleanup { kind, .. }, _) => idle::record_cleanup(rec, desired, cx, *kind, outcome),
        (_, Stage::Prep) => prep::record_outcome(rec, cx, step, outcome),
        (_, Stage::Rollback) => rollback::record_outcome(rec, cx, step, outcome),
        _ => upgrade::record_outcome(rec, desired, cx, step, outcome),
    }
    rec.status.last_step = Some(StepRecord {
        name: step.name().to_string(),
        stage: step.stage(),
        result: match outcome {
            Outcome::Failed { .. } => StepResult::Failed,
            _ => StepResult::Succeeded,
        },
        message: outcome.message().to_string(),
        start_time: started,
        completion_time: now,
    });
    let target = rec.target.clone();
    let pivot = Pivot::new(facts, target.as_ref(), desired);
    rec.status.valid_next_stages = stage::valid_next_stages(&rec.status, &pivot)?;
    rec.status.stamp_generation(desired.stage, rec.generation);
    Ok(())
}

/// The message LCA writes when abort/finalize cleanup failed.
pub fn cleanup_failed_message(errors: &str) -> String {
    format!(
        "{} {}",
        errors.trim_end(),
        conditions::manual_cleanup_hint()
    )
}
