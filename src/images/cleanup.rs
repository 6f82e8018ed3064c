//! Image cleanup before Prep: free container storage by deleting unused images, LCA's way.
//!
//! The algorithm is LCA's (`imagemgmt.CleanupUnusedImages`), unchanged in substance because
//! operators tune `disk_usage_threshold_percent` against it:
//!
//! 1. Usage of the filesystem holding `/var/lib/containers` is `(blocks - bavail) * 100 / blocks`
//!    ([`FsUsage::used_percent`]). Only when it is *strictly above* the threshold is anything
//!    deleted.
//! 2. Candidates are all images except pinned ones and ones any container uses (running or not),
//!    dangling images first, then oldest `Created` first ([`candidates`]).
//! 3. They are removed five at a time; after each batch the usage is measured again and the
//!    cleanup stops as soon as it is at or below the threshold.
//! 4. Running out of candidates is a warning, never a failure: cleanup exists to make Prep more
//!    likely to succeed and must not be the reason it fails.
//!
//! What ibu does differently, for clarity and safety rather than outcome: the selection is a pure
//! function of [`ContainerFacts`] so the planner and tests can see it; containers podman did not
//! create (CRI-O's, buildah's) count as users too; podman is never asked to `--force`, so an image
//! that became in use after the facts were gathered is refused by podman and survives; and the
//! executor returns a [`CleanupReport`] that says what happened in one status line instead of
//! only logging. One measurement detail also differs: xfs releases the blocks of deleted files a
//! moment after the unlink (background inode inactivation; the tests saw a `statvfs` right after
//! `podman rmi` miss a whole image, which showed up 20 ms later). LCA reads once and may delete a
//! batch too many; ibu, when a reading is still above the threshold, reads again until the usage
//! stops changing (at most one second) before deciding on another batch.
//!
//! The only `Err` is not being able to measure the usage: without it there is no way to tell
//! whether to delete, or when to stop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::pinned;
use super::podman::{Podman, RmiOutcome};
use crate::facts::{ContainerFacts, FsUsage, ImageFacts, disks};
use crate::humanize;
use crate::paths::Paths;
use crate::spec::ImageCleanup;

/// Images removed per `podman rmi` before the usage is measured again (LCA's value).
pub const BATCH_SIZE: usize = 5;

/// Pause between readings while waiting for freed space to show up (see [`settled_usage`]).
const SETTLE_INTERVAL: Duration = Duration::from_millis(100);

/// At most this many extra readings (one second) before the last reading is taken as is.
const SETTLE_READINGS: usize = 10;

/// How the images of [`ContainerFacts`] split up for the cleanup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// Removable, in removal order: dangling first, then oldest first.
    pub candidates: Vec<&'a ImageFacts>,
    /// Kept because a CRI-O pinned pattern matches.
    pub pinned: Vec<&'a ImageFacts>,
    /// Kept because a container uses them (and not pinned).
    pub in_use: Vec<&'a ImageFacts>,
}

/// Split the images into candidates, pinned and in use. Pure.
pub fn select(facts: &ContainerFacts) -> Selection<'_> {
    let mut sel = Selection::default();
    for image in &facts.images {
        if pinned::is_pinned(&facts.pinned_patterns, image) {
            sel.pinned.push(image);
        } else if is_in_use(&facts.in_use, image) {
            sel.in_use.push(image);
        } else {
            sel.candidates.push(image);
        }
    }
    // Stable: images equal in both keys keep podman's order.
    sel.candidates.sort_by_key(|i| (!i.dangling, i.created));
    sel
}

/// The images the cleanup may remove, in the order it removes them. Pure.
pub fn candidates(facts: &ContainerFacts) -> Vec<&ImageFacts> {
    select(facts).candidates
}

/// Whether a container uses `image`: an in-use reference equals its ID (with or without
/// `sha256:`), one of its names, or one of its digested names.
pub fn is_in_use(in_use: &[String], image: &ImageFacts) -> bool {
    let id = bare_id(&image.id);
    in_use.iter().any(|r| {
        bare_id(r) == id
            || image.names.iter().any(|n| n == r)
            || image.digests.iter().any(|d| d == r)
    })
}

fn bare_id(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// Whether cleanup should delete anything at `usage`: enabled, and usage strictly above the
/// threshold. Pure.
pub fn needed(usage: &FsUsage, cleanup: &ImageCleanup) -> bool {
    cleanup.on_prep && usage.used_percent() > cleanup.disk_usage_threshold_percent
}

/// How a cleanup run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// `on_prep` is false; nothing was removed.
    Disabled,
    /// Usage was at or below the threshold to begin with.
    BelowThreshold,
    /// Images were removed until usage was at or below the threshold.
    ReachedThreshold,
    /// Every candidate was tried and usage is still above the threshold (a warning).
    OutOfCandidates,
    /// podman could not be run, so nothing more could be removed (a warning).
    RemovalFailed,
}

/// An image the cleanup removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedImage {
    pub id: String,
    pub names: Vec<String>,
    /// podman's `Size` of the image.
    pub size: u64,
}

/// What a cleanup run did; goes into the status and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    /// The container storage directory measured.
    pub path: PathBuf,
    pub threshold_percent: u8,
    pub before: FsUsage,
    pub after: FsUsage,
    pub outcome: Outcome,
    /// In removal order.
    pub removed: Vec<RemovedImage>,
    /// Sum of the removed images' sizes. An estimate: podman counts layers shared with other
    /// images in each image's size, so the space really freed can be less (see `after`).
    pub bytes_freed: u64,
    /// Images kept because they are pinned.
    pub skipped_pinned: usize,
    /// Images kept because a container uses them.
    pub skipped_in_use: usize,
    /// `podman rmi` calls made.
    pub batches: usize,
    /// Everything that did not go as planned but did not stop Prep.
    pub warnings: Vec<String>,
}

impl CleanupReport {
    /// One line for a status message, e.g.
    /// `container storage at 72% > 50%: removed 7 images (1.2 GiB); now 41%`.
    pub fn summary(&self) -> String {
        let before = self.before.used_percent();
        let after = self.after.used_percent();
        let t = self.threshold_percent;
        let removed = format!(
            "removed {} image{} ({})",
            self.removed.len(),
            if self.removed.len() == 1 { "" } else { "s" },
            humanize::bytes(self.bytes_freed)
        );
        let mut s = match self.outcome {
            Outcome::Disabled => format!("image cleanup disabled; container storage at {before}%"),
            Outcome::BelowThreshold => {
                format!("container storage at {before}% <= {t}%: no image cleanup needed")
            }
            Outcome::ReachedThreshold => {
                format!("container storage at {before}% > {t}%: {removed}; now {after}%")
            }
            Outcome::OutOfCandidates => format!(
                "container storage at {before}% > {t}%: {removed}; now {after}%, still above: \
                 no more removable images ({} pinned, {} in use)",
                self.skipped_pinned, self.skipped_in_use
            ),
            Outcome::RemovalFailed => format!(
                "container storage at {before}% > {t}%: {removed}, then podman failed; now {after}%"
            ),
        };
        if !self.warnings.is_empty() {
            let n = self.warnings.len();
            s.push_str(&format!(" ({n} warning{})", if n == 1 { "" } else { "s" }));
        }
        s
    }
}

/// The step executor: clean up the container storage of `paths` per `cleanup`, using `facts`
/// gathered in this run ([`crate::facts::Observe::containers`]).
///
/// `Err` only when the usage cannot be measured; every other problem is a warning in the
/// report. Also safe to call when `on_prep` is false (it measures and removes nothing), though
/// the planner is expected to skip the step then.
pub fn run(paths: &Paths, cleanup: &ImageCleanup, facts: &ContainerFacts) -> Result<CleanupReport> {
    let mut store = LiveStore {
        path: paths.container_storage(),
        paths,
        podman: None,
    };
    execute(&mut store, cleanup, facts)
}

/// What the executor needs from the world; the real one is [`LiveStore`], tests use a fake.
trait Store {
    fn path(&self) -> &Path;
    fn usage(&mut self) -> Result<FsUsage>;
    fn pause(&mut self, d: Duration);
    /// `Err` when podman could not be run at all.
    fn remove(&mut self, batch: &[&ImageFacts]) -> Result<RmiOutcome>;
}

struct LiveStore<'p> {
    path: PathBuf,
    paths: &'p Paths,
    /// Created on the first removal: a run that deletes nothing never starts a shell.
    podman: Option<Podman>,
}

impl Store for LiveStore<'_> {
    fn path(&self) -> &Path {
        &self.path
    }

    fn usage(&mut self) -> Result<FsUsage> {
        disks::usage(&self.path).context("measuring container storage usage")
    }

    fn pause(&mut self, d: Duration) {
        std::thread::sleep(d);
    }

    fn remove(&mut self, batch: &[&ImageFacts]) -> Result<RmiOutcome> {
        let podman = match self.podman.take() {
            Some(p) => p,
            None => Podman::new(self.paths)?,
        };
        let outcome = podman.rmi(batch);
        self.podman = Some(podman);
        outcome
    }
}

fn execute(
    store: &mut impl Store,
    cleanup: &ImageCleanup,
    facts: &ContainerFacts,
) -> Result<CleanupReport> {
    let threshold = cleanup.disk_usage_threshold_percent;
    let path = store.path().to_path_buf();
    let before = store.usage()?;
    let sel = select(facts);
    let mut report = CleanupReport {
        path,
        threshold_percent: threshold,
        before,
        after: before,
        outcome: Outcome::BelowThreshold,
        removed: Vec::new(),
        bytes_freed: 0,
        skipped_pinned: sel.pinned.len(),
        skipped_in_use: sel.in_use.len(),
        batches: 0,
        warnings: Vec::new(),
    };
    if !cleanup.on_prep {
        report.outcome = Outcome::Disabled;
        tracing::info!(usage = before.used_percent(), "image cleanup disabled");
        return Ok(report);
    }
    if !needed(&before, cleanup) {
        tracing::info!(
            usage = before.used_percent(),
            threshold,
            "container storage within threshold, no image cleanup needed"
        );
        return Ok(report);
    }
    tracing::info!(
        usage = before.used_percent(),
        threshold,
        candidates = sel.candidates.len(),
        pinned = sel.pinned.len(),
        in_use = sel.in_use.len(),
        "container storage above threshold, removing unused images"
    );

    report.outcome = Outcome::OutOfCandidates;
    for batch in sel.candidates.chunks(BATCH_SIZE) {
        report.batches += 1;
        let rmi = match store.remove(batch) {
            Ok(r) => r,
            Err(e) => {
                let w = format!("cannot remove images, stopping the image cleanup: {e:#}");
                tracing::warn!(batch = report.batches, "{w}");
                report.warnings.push(w);
                report.outcome = Outcome::RemovalFailed;
                break;
            }
        };
        let failed = record_batch(&mut report, batch, &rmi);
        let usage = settled_usage(store, threshold).with_context(|| {
            format!(
                "measuring container storage after removing {} images",
                report.removed.len()
            )
        })?;
        report.after = usage;
        tracing::info!(
            batch = report.batches,
            removed = batch.len() - failed,
            failed,
            usage = usage.used_percent(),
            threshold,
            "image cleanup batch done"
        );
        if usage.used_percent() <= threshold {
            report.outcome = Outcome::ReachedThreshold;
            break;
        }
    }

    if report.outcome == Outcome::OutOfCandidates {
        let w = format!(
            "container storage still at {}% > {threshold}% after trying all {} removable images \
             ({} pinned and {} in use kept)",
            report.after.used_percent(),
            sel.candidates.len(),
            report.skipped_pinned,
            report.skipped_in_use
        );
        tracing::warn!(usage = report.after.used_percent(), threshold, "{w}");
        report.warnings.push(w);
    }
    tracing::info!(
        removed = report.removed.len(),
        bytes_freed = report.bytes_freed,
        usage = report.after.used_percent(),
        warnings = report.warnings.len(),
        "{}",
        report.summary()
    );
    Ok(report)
}

/// The usage after a removal. A reading at or below `threshold` is final (more freed space
/// only helps); one above it is repeated every [`SETTLE_INTERVAL`] until two readings agree, so
/// blocks the filesystem is still releasing are counted before another batch is deleted.
fn settled_usage(store: &mut impl Store, threshold: u8) -> Result<FsUsage> {
    let mut last = store.usage()?;
    for _ in 0..SETTLE_READINGS {
        if last.used_percent() <= threshold {
            break;
        }
        store.pause(SETTLE_INTERVAL);
        let now = store.usage()?;
        let stable = now.used_percent() == last.used_percent();
        last = now;
        if stable {
            break;
        }
    }
    Ok(last)
}

/// Record what one `podman rmi` removed and warn about the rest; returns how many failed.
fn record_batch(report: &mut CleanupReport, batch: &[&ImageFacts], rmi: &RmiOutcome) -> usize {
    let deleted = |id: &str| rmi.deleted.iter().any(|d| bare_id(d) == bare_id(id));
    let mut kept = Vec::new();
    for image in batch {
        if deleted(&image.id) {
            report.bytes_freed += image.size;
            report.removed.push(RemovedImage {
                id: image.id.clone(),
                names: image.names.clone(),
                size: image.size,
            });
        } else {
            kept.push(describe(image));
        }
    }
    if !kept.is_empty() {
        let stderr = if rmi.stderr.is_empty() {
            "podman gave no reason".to_string()
        } else {
            rmi.stderr.replace('\n', " ").replace('\t', "")
        };
        let w = format!(
            "podman rmi left {} of {} images: {}: {stderr}",
            kept.len(),
            batch.len(),
            kept.join(", ")
        );
        tracing::warn!(batch = report.batches, "{w}");
        report.warnings.push(w);
    }
    for id in &rmi.deleted {
        if !batch.iter().any(|i| bare_id(&i.id) == bare_id(id)) {
            let w = format!("podman rmi also deleted image {id}, which was not a candidate");
            tracing::warn!(batch = report.batches, "{w}");
            report.warnings.push(w);
        }
    }
    kept.len()
}

/// `0123456789ab (name, name)` or `0123456789ab (no name)`.
fn describe(image: &ImageFacts) -> String {
    let short: String = bare_id(&image.id).chars().take(12).collect();
    if image.names.is_empty() {
        format!("{short} (no name)")
    } else {
        format!("{short} ({})", image.names.join(", "))
    }
}

#[cfg(test)]
#[path = "cleanup_tests.rs"]
mod tests;
