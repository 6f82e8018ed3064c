//! Abort and finalize: remove every stateroot but the booted one, and ibu's workspace.

use anyhow::Result;

use super::Env;
use crate::plan::{CleanupKind, Outcome};
use crate::stateroot;

pub(super) fn run(env: &Env<'_>, kind: CleanupKind, keep: &str) -> Result<Outcome> {
    // A trial boot armed before an abort must not start a stateroot that is about to go.
    crate::bootloader::disarm_trial(env.paths)?;
    let report = stateroot::remove_all_except(env.paths, keep)?;
    tracing::debug!(
        step = super::kind_name(kind),
        removed = ?report.removed_stateroots,
        undeployed = ?report.undeployed,
        refs = ?report.removed_refs,
        "cleanup report"
    );
    if report.errors.is_empty() {
        Ok(Outcome::Succeeded {
            message: report.summary(),
        })
    } else {
        Ok(Outcome::Failed {
            message: report.errors.join("; "),
        })
    }
}
