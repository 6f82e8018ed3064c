//! Container storage facts. STUB: implemented in the images work.
use super::ContainerFacts;
use crate::paths::Paths;
use anyhow::Result;

pub fn gather(_paths: &Paths) -> Result<ContainerFacts> {
    anyhow::bail!("container facts not implemented yet")
}
