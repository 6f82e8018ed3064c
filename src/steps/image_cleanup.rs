//! Image cleanup before Prep. (Wired to `crate::images::cleanup` once that lands.)

use anyhow::Result;

use super::Env;
use crate::plan::Outcome;

pub(super) fn run(_env: &Env<'_>, _threshold_percent: u8) -> Result<Outcome> {
    anyhow::bail!("image cleanup executor not wired yet")
}
