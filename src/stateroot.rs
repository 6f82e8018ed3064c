//! Changes to stateroots: what abort and finalize remove (and, later, what Prep creates).
//!
//! Cleanup follows LCA's `CleanupUnbootedStateroots` but through libostree directly: drop every
//! deployment of another stateroot from the deployment list and write it (the booted deployment
//! is never touched, and a refusal is an error, not a skip), let libostree prune the repository
//! and the now unreferenced deployment directories, then delete the leftover stateroot
//! directories (a half-made Prep can leave one with no deployment) and ibu's own refs.

use anyhow::{Context, Result, bail};
use ostree::gio;

use crate::paths::Paths;
use crate::sysroot;

/// Prefix of every ref ibu creates in the ostree repository (`ibu/<stateroot>`).
pub const REF_PREFIX: &str = "ibu";

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub undeployed: Vec<String>,
    pub removed_stateroots: Vec<String>,
    pub removed_refs: Vec<String>,
    /// Problems that did not stop the rest of the cleanup.
    pub errors: Vec<String>,
}

impl CleanupReport {
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "removed stateroots: {}; undeployed: {}",
            list(&self.removed_stateroots),
            list(&self.undeployed)
        )
    }
}

/// Remove every stateroot except `keep`, which must be the booted one. Tries everything and
/// reports all failures rather than stopping at the first (like LCA's cleanup).
pub fn remove_all_except(paths: &Paths, keep: &str) -> Result<CleanupReport> {
    let w = sysroot::open_writable(paths)?;
    let sr = &w.sysroot;
    let booted = sysroot::booted_deployment(paths, sr)
        .context("no booted deployment found: refusing to remove stateroots")?;
    if booted.osname() != keep {
        bail!(
            "refusing to clean up: the booted stateroot is {:?}, not {keep:?}",
            booted.osname().as_str()
        );
    }
    let mut report = CleanupReport::default();

    let all = sr.deployments();
    let (kept, dropped): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d.osname() == keep);
    if !dropped.is_empty() {
        for d in &dropped {
            report
                .undeployed
                .push(format!("{} {}.{}", d.osname(), d.csum(), d.deployserial()));
        }
        sr.write_deployments(&kept, gio::Cancellable::NONE)
            .context("writing the deployment list without the other stateroots")?;
    }

    let repo = sr.repo();
    let refs = repo
        .list_refs(Some(REF_PREFIX), gio::Cancellable::NONE)
        .context("listing ibu's refs")?;
    for name in refs.keys() {
        // list_refs with a prefix returns names relative to it.
        let full = format!("{REF_PREFIX}/{name}");
        if name.as_str() == keep {
            continue;
        }
        match repo.set_ref_immediate(None, &full, None, gio::Cancellable::NONE) {
            Ok(()) => report.removed_refs.push(full),
            Err(e) => report
                .errors
                .push(format!("failed to delete ref {full}: {e}")),
        }
    }

    // Prunes the repo and removes deployment directories nothing references any more.
    if let Err(e) = sr.cleanup(gio::Cancellable::NONE) {
        report.errors.push(format!("ostree cleanup failed: {e}"));
    }

    let deploy_dir = paths.sysroot.join("ostree/deploy");
    let entries = std::fs::read_dir(&deploy_dir)
        .with_context(|| format!("listing {}", deploy_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", deploy_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == keep || !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => report.removed_stateroots.push(name),
            Err(e) => report
                .errors
                .push(format!("failed to remove stateroot {name}: {e}")),
        }
    }
    crate::fsutil::sync_dir(&deploy_dir)?;

    let ws = paths.workspace();
    if ws.exists()
        && let Err(e) = std::fs::remove_dir_all(&ws)
    {
        report
            .errors
            .push(format!("removing {} failed: {e}", ws.display()));
    }
    Ok(report)
}
