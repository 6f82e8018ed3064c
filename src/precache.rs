//! Precache: pull the images the new release needs before the upgrade, so the upgrade does not
//! wait for them.
//!
//! During Prep, after the new OS is staged, LCA pulls every image in the seed's
//! `containers.list` (plus any extra images): ten pulls at once, up to five attempts each, no
//! retry on "manifest unknown", progress as `total: N (pulled: N, failed: N)`, and an image
//! whose pulls failed but that is present afterwards counts as pulled
//! (`reference/lca-behaviour.md` §4 step 7). ibu keeps that contract and fixes LCA's weak spot:
//! LCA re-pulls images that are already present — on a node one release behind, most of them —
//! each costing a registry round trip and a podman run. ibu lists the storage once and skips
//! what is there without any pull ([`presence`]: the matching rules, normalised the way
//! containers/image normalises names), then pulls only the rest ([`pull`]: worker pool,
//! retries with backoff).
//!
//! Failing pulls are not errors of [`precache`]: they are counted in the [`PrecacheReport`],
//! each with podman's own message, and the caller decides (Prep fails when `failed > 0`, unless
//! a best-effort switch says otherwise). [`precache`] returns `Err` only when the storage cannot
//! be listed at all, because then nothing can be decided.
//!
//! All podman runs go through [`Podman`], so they address the storage of the given [`Paths`]
//! (a sandbox's own storage in tests). Registry credentials come as an authfile *path* in
//! [`PullOptions`]; the caller writes it 0600 and removes it after, and nothing here reads or
//! logs its content.

pub mod presence;
pub mod pull;

#[cfg(test)]
mod tests;

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::facts::{ContainerFacts, ImageFacts};
use crate::images::podman::Podman;
pub use crate::images::podman::{PullError, PullOptions};
use crate::paths::Paths;
pub use presence::{Invalid, Missing, Present, Wanted, missing, normalize};
use pull::{Done, Retry};

/// Pulls at once, as LCA (`DefaultMaxConcurrentPulls`).
pub const DEFAULT_CONCURRENCY: usize = 10;
/// Attempts per image, as LCA (`MaxRetries`).
pub const DEFAULT_ATTEMPTS: u32 = 5;
/// First wait between attempts (then doubled, capped at [`pull::MAX_BACKOFF`]): four retries
/// wait 2 + 4 + 8 + 16 = 30 s in all.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(2);

/// How to precache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecacheOptions {
    /// How `podman pull` reaches the registries (authfile, TLS).
    pub pull: PullOptions,
    /// Most pulls running at once (0 counts as 1).
    pub concurrency: usize,
    /// Attempts per image (0 counts as 1).
    pub attempts: u32,
    /// Wait after the first failed attempt, doubled after each further one.
    pub backoff: Duration,
}

impl Default for PrecacheOptions {
    fn default() -> Self {
        PrecacheOptions {
            pull: PullOptions::default(),
            concurrency: DEFAULT_CONCURRENCY,
            attempts: DEFAULT_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
        }
    }
}

/// One image that could not be precached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullFailure {
    /// As written in the wanted list.
    pub image: String,
    /// Why, with podman's message and the number of attempts.
    pub error: String,
}

/// Where precaching stands; also what [`precache`] returns at the end. Every distinct wanted
/// image ends up in exactly one of `pulled`, `skipped` and `failed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrecacheReport {
    /// Distinct wanted images.
    pub total: usize,
    /// Pulled now (or, after failing, found in storage afterwards).
    pub pulled: usize,
    /// Already in storage: not pulled.
    pub skipped: usize,
    pub failed: usize,
    /// One entry per failed image, in the order they failed.
    pub failures: Vec<PullFailure>,
}

impl PrecacheReport {
    /// `total: N (pulled: N, skipped: N, failed: N)` — LCA's progress line with the skipped
    /// images added.
    pub fn summary(&self) -> String {
        format!(
            "total: {} (pulled: {}, skipped: {}, failed: {})",
            self.total, self.pulled, self.skipped, self.failed
        )
    }

    /// Images finished so far.
    pub fn done(&self) -> usize {
        self.pulled + self.skipped + self.failed
    }
}

/// What precache needs from the node; [`PodmanBackend`] in production, a fake in unit tests.
pub(crate) trait Backend: Sync {
    /// Every image in container storage.
    fn images(&self) -> Result<Vec<ImageFacts>>;
    /// One attempt to pull the normalised pull-spec `spec`.
    fn pull(&self, spec: &str) -> Result<(), PullError>;
    /// Give the image `source` (a normalised pull-spec) the additional name `name`.
    fn tag(&self, source: &str, name: &str) -> Result<()>;
}

/// The storage of a [`Paths`], through podman.
struct PodmanBackend<'a> {
    paths: &'a Paths,
    pull: &'a PullOptions,
}

impl Backend for PodmanBackend<'_> {
    fn images(&self) -> Result<Vec<ImageFacts>> {
        Podman::new(self.paths)?.images()
    }

    fn pull(&self, spec: &str) -> Result<(), PullError> {
        // One Podman per pull: it is a few bytes, and each worker thread needs its own shell.
        let podman = Podman::new(self.paths).map_err(|e| PullError::Spawn {
            image: spec.to_string(),
            reason: format!("{e:#}"),
        })?;
        podman.pull(spec, self.pull)
    }

    fn tag(&self, source: &str, name: &str) -> Result<()> {
        Podman::new(self.paths)?.tag(source, name)
    }
}

/// Make sure every image of `wanted` is in the container storage of `paths`: skip the present
/// ones, pull the rest (see the module documentation). `progress` is called on this thread
/// once after the presence check and then after every image that finishes.
pub fn precache(
    paths: &Paths,
    wanted: &[String],
    opts: &PrecacheOptions,
    progress: &mut dyn FnMut(&PrecacheReport),
) -> Result<PrecacheReport> {
    let backend = PodmanBackend {
        paths,
        pull: &opts.pull,
    };
    run(&backend, wanted, opts, progress)
}

pub(crate) fn run(
    backend: &dyn Backend,
    wanted: &[String],
    opts: &PrecacheOptions,
    progress: &mut dyn FnMut(&PrecacheReport),
) -> Result<PrecacheReport> {
    let facts = ContainerFacts {
        images: backend
            .images()
            .context("listing the images in container storage, to skip those present")?,
        ..ContainerFacts::default()
    };
    let plan = missing(wanted, &facts);
    let mut report = PrecacheReport {
        total: plan.total(),
        skipped: plan.skipped(),
        failed: plan.invalid.len(),
        ..PrecacheReport::default()
    };
    for w in &plan.present {
        tracing::debug!(image = w.image, pull_spec = %w.pull_spec, "already in container storage, not pulled");
    }
    for i in &plan.invalid {
        tracing::warn!(image = i.image, error = %i.error, "not an image reference, not pulled");
        report.failures.push(PullFailure {
            image: i.image.to_string(),
            error: format!("{} (not pulled)", i.error),
        });
    }
    let concurrency = opts.concurrency.max(1);
    tracing::info!(
        total = report.total,
        skipped = report.skipped,
        to_pull = plan.to_pull.len(),
        invalid = plan.invalid.len(),
        duplicates = plan.duplicates,
        concurrency,
        attempts = opts.attempts.max(1),
        "precaching images"
    );
    progress(&report);

    let specs: Vec<&str> = plan.to_pull.iter().map(|w| w.pull_spec.as_str()).collect();
    let retry = Retry {
        attempts: opts.attempts,
        backoff: opts.backoff,
    };
    // Indices into `plan.to_pull` of the images whose pulls failed.
    let mut failed_pulls: Vec<usize> = Vec::new();
    pull::pull_all(backend, &specs, concurrency, retry, &mut |done: Done| {
        let w = &plan.to_pull[done.index];
        match done.result {
            Ok(()) => {
                report.pulled += 1;
                tracing::info!(image = w.image, pull_spec = %w.pull_spec, attempts = done.attempts, "pulled");
            }
            Err(e) => {
                report.failed += 1;
                let error = describe(&e, done.attempts);
                tracing::warn!(image = w.image, attempts = done.attempts, error = %error, "pull failed");
                report.failures.push(PullFailure {
                    image: w.image.to_string(),
                    error,
                });
                failed_pulls.push(done.index);
            }
        }
        tracing::info!(progress = %report.summary(), "precache progress");
        progress(&report);
    });

    if !failed_pulls.is_empty()
        && recount_present(backend, &plan.to_pull, &failed_pulls, &mut report)
    {
        progress(&report);
    }
    restore_tags(backend, wanted);
    tracing::info!(summary = %report.summary(), "precache finished");
    Ok(report)
}

/// `repo:tag@digest` is pulled by digest, which leaves the image without the tag; give it the
/// tag back (a name only: nothing is pulled), unless the storage already has that name.
fn restore_tags(backend: &dyn Backend, wanted: &[String]) {
    let tagged: Vec<(String, String)> = wanted
        .iter()
        .filter_map(|w| crate::spec::ImageRef::parse(w).ok())
        .filter(|r| r.tag.is_some() && r.digest.is_some())
        .map(|r| {
            let by_digest = presence::normalized(&r);
            let mut by_tag = r.clone();
            by_tag.digest = None;
            (by_digest, presence::normalized(&by_tag))
        })
        .collect();
    if tagged.is_empty() {
        return;
    }
    let present = match backend.images() {
        Ok(images) => Present::of(&images),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot list container storage; tags not restored");
            return;
        }
    };
    for (by_digest, by_tag) in tagged {
        if present.contains(&by_tag) || !present.contains(&by_digest) {
            continue;
        }
        match backend.tag(&by_digest, &by_tag) {
            Ok(()) => {
                tracing::info!(image = %by_digest, tag = %by_tag, "tagged as the seed had it")
            }
            Err(e) => {
                tracing::warn!(image = %by_digest, tag = %by_tag, error = %format!("{e:#}"), "tagging failed")
            }
        }
    }
}

/// LCA's rule: an image whose pulls failed but that is in storage now (another pull, or
/// another puller, brought it) counts as pulled. One more listing answers for all of them.
/// Returns whether the report changed.
fn recount_present(
    backend: &dyn Backend,
    to_pull: &[Wanted<'_>],
    failed_pulls: &[usize],
    report: &mut PrecacheReport,
) -> bool {
    let images = match backend.images() {
        Ok(images) => images,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot list container storage again; failed pulls stay failed");
            return false;
        }
    };
    let present = Present::of(&images);
    let mut changed = false;
    for &i in failed_pulls {
        let w = &to_pull[i];
        if present.contains(&w.pull_spec) {
            tracing::info!(
                image = w.image,
                "pull failed, but the image is in storage now: counted as pulled"
            );
            report.failures.retain(|f| f.image != w.image);
            report.failed -= 1;
            report.pulled += 1;
            changed = true;
        }
    }
    changed
}

/// The report's message for a failed image: podman's, and how many attempts were made.
fn describe(e: &PullError, attempts: u32) -> String {
    let tries = if attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{attempts} attempts")
    };
    let why = if e.is_permanent() {
        ", not retried"
    } else {
        ""
    };
    format!("{e} ({tries}{why})")
}
