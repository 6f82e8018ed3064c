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
use crate::status::store::Target;

mod cleanup;
mod image_cleanup;
pub mod prep;

/// What executors may use.
pub struct Env<'a> {
    pub paths: &'a Paths,
    pub desired: &'a Desired,
    pub facts: &'a dyn Observe,
    /// The upgrade being prepared, as recorded.
    pub target: Option<&'a Target>,
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
