//! STUB until the restore work lands (replaced by the merge).
use std::path::Path;

use anyhow::Result;

use crate::oci::ImageManifest;
use crate::seed::source::SeedSource;

pub struct RestoreReport;

impl RestoreReport {
    pub fn summary(&self) -> String {
        String::new()
    }
}

pub fn restore_var(
    _src: &dyn SeedSource,
    _m: &ImageManifest,
    _dir: &Path,
) -> Result<RestoreReport> {
    anyhow::bail!("restore not wired yet")
}

pub fn restore_etc(
    _src: &dyn SeedSource,
    _m: &ImageManifest,
    _deployment_dir: &Path,
    _staging_parent: &Path,
    _deletions: &[String],
) -> Result<RestoreReport> {
    anyhow::bail!("restore not wired yet")
}
