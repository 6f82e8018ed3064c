//! ostree facts through libostree. STUB: implemented in the facts work.
use super::{Footprint, OstreeFacts};
use crate::paths::Paths;
use anyhow::Result;

pub fn gather(_paths: &Paths) -> Result<OstreeFacts> {
    anyhow::bail!("ostree facts not implemented yet")
}

pub fn footprint(_paths: &Paths, _ostree: &OstreeFacts) -> Result<Footprint> {
    anyhow::bail!("footprint not implemented yet")
}
