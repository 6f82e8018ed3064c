//! Step executors: the thin, imperative part that touches the system.
//!
//! Each executor does exactly the work its [`Step`] names and reports an [`Outcome`]; what the
//! outcome means for the status is decided by the pure [`crate::plan::record`]. Executors never
//! panic and never return early without an outcome: an error becomes `Outcome::Failed` with the
//! whole context chain as its message.

use crate::facts::Observe;
use crate::paths::Paths;
use crate::plan::{CleanupKind, Outcome, Step};
use crate::spec::Desired;
use crate::status::store::{Recorded, Target};

mod cleanup;
mod image_cleanup;
pub mod prep;
pub mod upgrade;

/// What executors may use.
pub struct Env<'a> {
    pub paths: &'a Paths,
    pub desired: &'a Desired,
    pub facts: &'a dyn Observe,
    /// The upgrade being prepared, as recorded.
    pub target: Option<&'a Target>,
    /// The whole recorded state as the planner left it (steps that copy it to the other
    /// stateroot).
    pub recorded: &'a Recorded,
    /// Report progress of a long step (ibu puts it in the stage's in-progress message).
    pub progress: &'a dyn Fn(&str),
}

/// Run one step.
pub fn execute(step: &Step, env: &Env<'_>) -> Outcome {
    let r = match step {
        Step::InspectSeed { image } => prep::inspect_seed(env, image),
        Step::ImageCleanup { threshold_percent } => image_cleanup::run(env, *threshold_percent),
        Step::FetchSeedMeta { image } => prep::fetch_seed_meta(env, image),
        Step::ImportOstree {
            image,
            commit,
            stateroot,
        } => prep::import_ostree(env, image, commit, stateroot),
        Step::DeployStateroot {
            image,
            stateroot,
            commit,
            kargs,
        } => prep::deploy_stateroot(env, image, stateroot, commit, kargs),
        Step::RestoreVar { image, stateroot } => prep::restore_var(env, image, stateroot),
        Step::RestoreEtc {
            image,
            stateroot,
            deployment,
        } => prep::restore_etc(env, image, stateroot, deployment),
        Step::Precache { image } => prep::precache(env, image),
        Step::Cleanup {
            kind,
            keep_stateroot,
        } => cleanup::run(env, *kind, keep_stateroot),
        Step::HealthChecks { phase } => upgrade::health::run(env.paths, *phase),
        Step::Backup { stateroot } => match env.target.and_then(|t| t.deployment.as_ref()) {
            Some(d) => upgrade::backup::backup(env, &upgrade::new_root(env, stateroot, d)),
            None => Err(anyhow::anyhow!(
                "internal: the new deployment was not recorded"
            )),
        },
        Step::CarryIdentity {
            stateroot,
            deployment,
        } => upgrade::identity::carry(env, &upgrade::new_root(env, stateroot, deployment)),
        Step::RegenerateCrypto {
            stateroot,
            deployment,
        } => upgrade::crypto::regenerate(env, &upgrade::new_root(env, stateroot, deployment)),
        Step::StageManifests { stateroot, version } => {
            match env.target.and_then(|t| t.deployment.as_ref()) {
                Some(d) => {
                    upgrade::manifests::stage(env, &upgrade::new_root(env, stateroot, d), version)
                }
                None => Err(anyhow::anyhow!(
                    "internal: the new deployment was not recorded"
                )),
            }
        }
        Step::WriteAutoRollback {
            stateroot,
            deployment,
        } => {
            upgrade::pivot::write_auto_rollback(env, &upgrade::new_root(env, stateroot, deployment))
        }
        Step::SaveState {
            stateroot,
            deployment,
        } => upgrade::pivot::save_state(env, &upgrade::new_root(env, stateroot, deployment)),
        Step::Pivot {
            stateroot,
            deployment,
        } => upgrade::pivot::pivot(env, stateroot, deployment),
        Step::Reboot { message, .. } => upgrade::pivot::reboot(env, message),
        Step::CommitPivot {
            stateroot,
            deployment,
        }
        | Step::RollbackSetDefault {
            stateroot,
            deployment,
        } => upgrade::pivot::set_default(env, stateroot, deployment),
        Step::ApplyIdentity => upgrade::identity::apply(env),
        Step::ApplyManifests { wave } => upgrade::manifests::apply(env, wave),
        Step::RestoreBackups => upgrade::backup::restore(env),
        Step::FinishUpgrade => upgrade::pivot::finish(env),
        Step::RollbackSaveState {
            stateroot,
            deployment,
        } => {
            upgrade::pivot::rollback_save_state(env, &upgrade::new_root(env, stateroot, deployment))
        }
    };
    r.unwrap_or_else(|e| Outcome::Failed {
        message: format!("{e:#}"),
    })
}

fn kind_name(kind: CleanupKind) -> &'static str {
    match kind {
        CleanupKind::Abort => "abort",
        CleanupKind::Finalize => "finalize",
    }
}
