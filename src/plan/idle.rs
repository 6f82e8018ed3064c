//! Planning Idle: abort (after Prep, or Upgrade before the pivot) and finalize (after
//! UpgradeCompleted or RollbackCompleted). Both clean up everything but the booted stateroot.
//!
//! A failed cleanup parks in `AbortFailed`/`FinalizeFailed` until the operator has cleaned up by
//! hand and adds the `lca.openshift.io/manual-cleanup-done` annotation. LCA removes the
//! annotation from the CR when it acts on it; ibu never rewrites the user's file, so it acts on
//! the annotation *appearing*: it must have been absent at some run after the failure.

use anyhow::{Context, Result};

use super::{CleanupKind, Decision, Outcome, Pass, Step, cleanup_failed_message};
use crate::spec::Desired;
use crate::status::conditions::{Ctx, MANUAL_CLEANUP_ANNOTATION};
use crate::status::store::Recorded;
use crate::status::{ConditionType, Reason};

pub(super) fn next(pass: &mut Pass<'_>) -> Result<Decision> {
    let Some(idle) = pass.rec.status.condition(ConditionType::Idle).cloned() else {
        return Ok(Decision::Blocked {
            reason: "internal: Idle in progress without an Idle condition".into(),
        });
    };
    let kind = match idle.reason {
        Reason::Aborting | Reason::AbortFailed => CleanupKind::Abort,
        _ => CleanupKind::Finalize,
    };
    let failed = matches!(idle.reason, Reason::AbortFailed | Reason::FinalizeFailed);
    if failed {
        let progress = &mut pass.rec.progress;
        if !pass.desired.manual_cleanup_done {
            progress.manual_cleanup_armed = true;
            return Ok(Decision::Blocked {
                reason: idle.message.clone(),
            });
        }
        if !progress.manual_cleanup_armed {
            return Ok(Decision::Blocked {
                reason: format!(
                    "{} (the '{MANUAL_CLEANUP_ANNOTATION}' annotation was already present when \
                     the cleanup failed: remove it, finish the cleanup, then add it again)",
                    idle.message
                ),
            });
        }
        // The annotation appeared after the failure: verify by running the cleanup again.
    }
    let ostree = pass.facts.ostree()?;
    let keep = ostree
        .booted_stateroot()
        .context("no booted deployment: refusing to clean up stateroots")?;
    Ok(Decision::Run(Step::Cleanup {
        kind,
        keep_stateroot: keep.to_string(),
    }))
}

/// Success: back to Idle with a clean slate. Failure: `AbortFailed`/`FinalizeFailed` with LCA's
/// message; the annotation, if already present now, does not count as the acknowledgement.
pub(super) fn record_cleanup(
    rec: &mut Recorded,
    desired: &Desired,
    cx: Ctx,
    kind: CleanupKind,
    outcome: &Outcome,
) {
    match outcome {
        Outcome::Succeeded { .. } | Outcome::Produced { .. } | Outcome::Warning { .. } => {
            rec.status.reset_to_idle(cx);
            rec.status.reset_history();
            rec.status.checks.clear();
            rec.progress.reset(None);
            rec.target = None;
            rec.upgrade = None;
        }
        Outcome::Failed { message } => {
            let reason = match kind {
                CleanupKind::Abort => Reason::AbortFailed,
                CleanupKind::Finalize => Reason::FinalizeFailed,
            };
            rec.status
                .set_idle_in_progress(cx, reason, &cleanup_failed_message(message));
            rec.progress.manual_cleanup_armed = !desired.manual_cleanup_done;
        }
    }
}
