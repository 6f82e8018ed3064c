//! Host facts. STUB: implemented in the facts work.
use super::HostFacts;
use crate::paths::Paths;
use anyhow::Result;

pub fn gather(_paths: &Paths) -> Result<HostFacts> {
    anyhow::bail!("host facts not implemented yet")
}
