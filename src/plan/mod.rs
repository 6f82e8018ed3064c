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
use crate::status::store::{DeploymentRecord, Recorded, SeedRecord, Target};
use crate::status::{CheckResult, ConditionType, Reason, StepRecord, StepResult, Timestamp};

mod idle;
mod prep;
mod prep_checks;
#[cfg(test)]
mod tests;

pub use crate::checks::CheckOutcome;
pub use prep::{PREP_STEPS, pinned_image};
pub use prep_checks::{FREE_SPACE_MARGIN_PERCENT, prep_checks};

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
        }
    }

    pub fn stage(&self) -> Stage {
        match self {
            Step::Cleanup { .. } => Stage::Idle,
            _ => Stage::Prep,
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
        }
    }
}

/// What the planner decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run this step now.
    Run(Step),
    /// Nothing to do yet; look again after `retry_after_secs`.
    Wait {
        reason: String,
        retry_after_secs: u64,
    },
    /// Nothing ibu can do until a human changes something (the desired stage, the host).
    Blocked { reason: String },
    /// The desired state is reached.
    Converged { summary: String },
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
        Some(s @ (Stage::Upgrade | Stage::Rollback)) => (
            Decision::Blocked {
                reason: format!("the {s} stage is not implemented in this version of ibu"),
            },
            vec![],
        ),
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
        (Stage::Idle, Some(stage::IdleKind::Initial)) => rec.target = None,
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
    match step {
        Step::Cleanup { kind, .. } => idle::record_cleanup(rec, desired, cx, *kind, outcome),
        _ => prep::record_outcome(rec, cx, step, outcome),
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
