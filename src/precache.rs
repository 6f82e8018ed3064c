//! STUB until the precache work lands (replaced by the merge).
use std::path::PathBuf;

use anyhow::Result;

use crate::paths::Paths;

#[derive(Debug, Clone, Default)]
pub struct PrecacheOptions {
    pub authfile: Option<PathBuf>,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default)]
pub struct PullFailure {
    pub image: String,
    pub error: String,
}

#[derive(Debug, Clone, Default)]
pub struct PrecacheReport {
    pub failed: usize,
    pub failures: Vec<PullFailure>,
}

impl PrecacheReport {
    pub fn summary(&self) -> String {
        String::new()
    }
}

pub fn precache(
    _paths: &Paths,
    _wanted: &[String],
    _opts: &PrecacheOptions,
    _progress: &mut dyn FnMut(&PrecacheReport),
) -> Result<PrecacheReport> {
    anyhow::bail!("precache not wired yet")
}
