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

mod cleanup;
mod image_cleanup;

/// What executors may use.
pub struct Env<'a> {
    pub paths: &'a Paths,
    pub desired: &'a Desired,
    pub facts: &'a dyn Observe,
}

/// Run one step.
pub fn execute(step: &Step, env: &Env<'_>) -> Outcome {
    let r = match step {
        Step::ImageCleanup { threshold_percent } => image_cleanup::run(env, *threshold_percent),
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
