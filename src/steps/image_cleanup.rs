//! Image cleanup before Prep: LCA's algorithm in [`crate::images::cleanup`].

use anyhow::Result;

use super::Env;
use crate::images::cleanup;
use crate::plan::Outcome;
use crate::spec::ImageCleanup;

pub(super) fn run(env: &Env<'_>, threshold_percent: u8) -> Result<Outcome> {
    let facts = env.facts.containers()?;
    let report = cleanup::run(
        env.paths,
        &ImageCleanup {
            on_prep: true,
            disk_usage_threshold_percent: threshold_percent,
        },
        facts,
    )?;
    let message = report.summary();
    let clean = report.warnings.is_empty()
        && matches!(
            report.outcome,
            cleanup::Outcome::ReachedThreshold | cleanup::Outcome::BelowThreshold
        );
    Ok(if clean {
        Outcome::Succeeded { message }
    } else {
        Outcome::Warning { message }
    })
}
