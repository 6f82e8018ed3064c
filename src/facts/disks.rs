//! Disk facts. STUB: implemented in the facts work.
use super::StorageFacts;
use crate::paths::Paths;
use anyhow::Result;

pub fn gather(_paths: &Paths) -> Result<StorageFacts> {
    anyhow::bail!("storage facts not implemented yet")
}
