//! Collecting a seed's content from the seed host: the first half of `ibu seed create`.
//!
//! [`collect`] checks that the host can be a seed ([`validate`]), then gathers everything the
//! seed image consists of, as lists and files the image writer consumes — it writes no tar and
//! no OCI layout itself:
//!
//! | what | from | module |
//! |---|---|---|
//! | seed info | facts + the steps below | [`info`] |
//! | `/etc` entries and `etc.deletions` | booted deployment's `etc` vs. its `usr/etc` | [`etc_diff`] |
//! | `/var` entries | the booted stateroot's `var` | [`var`] |
//! | `containers.list` | the container storage | [`images`] |
//! | the `.origin` | the booted deployment's `.origin` file | here |
//! | ostree objects | the booted commit, exported to an archive repository | [`ostree_export`] |
//!
//! What is left out of `/etc` and `/var` and why is data with a reason per rule, in
//! [`exclude`].
//!
//! The seed host is left exactly as it was: only the work directory is written (the archive
//! repository at `<workdir>/ostree`). If collection fails midway, whatever it wrote is still in
//! the work directory and **the caller removes it** (the work directory is the caller's: it
//! may hold the writer's output too). On a booted host a good work directory is under
//! `/var/lib/ibu/workspace`, which the `/var` selection leaves out anyway; any work directory
//! inside `/var` is left out of the seed, and one inside `/etc` is refused.
//!
//! Works the same on a booted host and on a directory sysroot ([`Paths`]): every location comes
//! from `paths` and the facts.
//!
//! Collection expects a quiet host (LCA stops the workloads before it archives anything): it
//! reads `/etc` and `/var` as they are at that moment. A file that vanishes while a directory
//! is listed is left out; anything else that changes under it is an error, not a silent mix.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::facts::Observe;
use crate::paths::Paths;
use crate::seed::format::SeedInfo;
use crate::status::store::Recorded;

pub mod etc_diff;
pub mod exclude;
pub mod images;
pub mod info;
pub mod ostree_export;
pub mod validate;
pub mod var;
mod walk;

pub use etc_diff::{Change, EtcEntry};
pub use exclude::{ETC_EXCLUSIONS, Exclusion, Exclusions, VAR_EXCLUSIONS};
pub use ostree_export::{ExportedObject, OstreeExport};
pub use var::VarEntry;
pub use walk::Kind;

/// Name of the archive repository inside the work directory.
pub const ARCHIVE_REPO_DIR: &str = "ostree";

/// A path left out of the seed, and the rule that did it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Excluded {
    /// Relative to `/etc` or `/var`.
    pub path: PathBuf,
    pub pattern: String,
    pub reason: String,
}

impl Excluded {
    pub fn new(path: &Path, rule: &Exclusion) -> Excluded {
        Excluded {
            path: path.to_path_buf(),
            pattern: rule.pattern.to_string(),
            reason: rule.reason.to_string(),
        }
    }
}

/// Everything a seed image is made of, ready for the writer.
#[derive(Debug, Clone)]
pub struct Collected {
    pub info: SeedInfo,
    /// Where the `/etc` entries are read from (the booted deployment's `etc`).
    pub etc_dir: PathBuf,
    /// `/etc` entries to archive, relative to `etc_dir`, in path order; explicit (never recurse).
    pub etc: Vec<EtcEntry>,
    /// `/etc/...` paths for `etc.deletions`, in path order.
    pub etc_deletions: Vec<PathBuf>,
    /// What the `/etc` exclusions left out.
    pub etc_excluded: Vec<Excluded>,
    /// Where the `/var` entries are read from (the booted stateroot's `var`).
    pub var_dir: PathBuf,
    /// `/var` entries to archive, relative to `var_dir`, in path order; explicit.
    pub var: Vec<VarEntry>,
    /// What the `/var` exclusions left out.
    pub var_excluded: Vec<Excluded>,
    /// `containers.list`: sorted, unique pull-specs.
    pub containers: Vec<String>,
    /// The booted deployment's `.origin` file.
    pub origin: String,
    /// The archive repository and its objects, sorted by name.
    pub ostree: OstreeExport,
    /// Things the operator should know; none of them made the seed wrong.
    pub warnings: Vec<String>,
}

impl Collected {
    /// The content of `etc.deletions`.
    pub fn etc_deletions_file(&self) -> Result<String> {
        etc_diff::lines_file(&self.etc_deletions, "etc.deletions")
    }

    /// The content of `containers.list`.
    pub fn containers_list_file(&self) -> String {
        self.containers.iter().map(|s| format!("{s}\n")).collect()
    }
}

/// Collect the seed's content from the host described by `paths` and `facts` (ibu's recorded
/// state is `recorded`), exporting the ostree commit into `workdir` (an existing directory).
pub fn collect(
    paths: &Paths,
    facts: &dyn Observe,
    recorded: &Recorded,
    workdir: &Path,
) -> Result<Collected> {
    let workdir = workdir
        .canonicalize()
        .with_context(|| format!("work directory {}", workdir.display()))?;
    if !workdir.is_dir() {
        bail!("work directory {} is not a directory", workdir.display());
    }

    let ostree = facts.ostree()?;
    let storage = facts.storage()?;
    let verdict = validate::validate(ostree, storage, recorded);
    if !verdict.is_ok() {
        bail!(
            "this host cannot be a seed:\n- {}",
            verdict.refusals.join("\n- ")
        );
    }
    let mut warnings = verdict.warnings;
    let booted = ostree.booted().context("no booted deployment")?;
    let deployment = paths
        .sysroot
        .join("ostree/deploy")
        .join(&booted.stateroot)
        .join("deploy")
        .join(booted.dirname());

    // /etc against the commit's defaults.
    let etc_dir = paths.etc.clone();
    let etc_canon = etc_dir
        .canonicalize()
        .with_context(|| format!("/etc of the seed: {}", etc_dir.display()))?;
    if workdir.starts_with(&etc_canon) {
        bail!(
            "work directory {} is inside the seed's /etc ({}); use one under /var/lib/ibu",
            workdir.display(),
            etc_dir.display()
        );
    }
    tracing::info!(etc = %etc_dir.display(), "comparing /etc with the commit's defaults");
    let defaults = deployment.join("usr/etc");
    let etc = etc_diff::diff(&etc_dir, &defaults, &Exclusions::new(ETC_EXCLUSIONS)).with_context(
        || {
            format!(
                "comparing {} with {}",
                etc_dir.display(),
                defaults.display()
            )
        },
    )?;
    tracing::info!(
        entries = etc.entries.len(),
        deletions = etc.deletions.len(),
        excluded = etc.excluded.len(),
        bytes = etc.bytes,
        "/etc difference"
    );
    // Fail now rather than in the writer if a deleted path cannot be listed.
    etc.deletions_file()?;
    warnings.extend(etc.warnings.iter().cloned());
    if !etc.skipped.is_empty() {
        warnings.push(skipped_warning("/etc", &etc.skipped));
    }

    // /var minus exclusions.
    let var_dir = paths.var.clone();
    let mut var_rules = Exclusions::new(VAR_EXCLUSIONS);
    let var_canon = var_dir
        .canonicalize()
        .with_context(|| format!("/var of the seed: {}", var_dir.display()))?;
    if let Ok(rel) = workdir.strip_prefix(&var_canon) {
        if rel.as_os_str().is_empty() {
            bail!("the work directory cannot be the seed's /var itself");
        }
        var_rules.push(Exclusion {
            pattern: rel.to_string_lossy().into_owned().into(),
            reason: "the work directory this seed is collected into".into(),
        });
    }
    let storage_rel = storage
        .container_storage_path
        .strip_prefix(&var_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from("lib/containers"));
    tracing::info!(var = %var_dir.display(), "selecting /var");
    let var = var::select(&var_dir, &var_rules, &[storage_rel])
        .with_context(|| format!("selecting the seed's /var in {}", var_dir.display()))?;
    tracing::info!(
        entries = var.entries.len(),
        excluded = var.excluded.len(),
        bytes = var.bytes,
        "/var selection"
    );
    warnings.extend(var.warnings.iter().cloned());
    if !var.skipped.is_empty() {
        warnings.push(skipped_warning("/var", &var.skipped));
    }

    // Images to precache.
    tracing::info!("listing container images");
    let containers = images::containers_list(facts.containers()?);
    warnings.extend(containers.warnings.iter().cloned());

    // The .origin.
    let origin_path = deployment.with_file_name(format!("{}.origin", booted.dirname()));
    let origin = std::fs::read_to_string(&origin_path).with_context(|| {
        format!(
            "reading the origin of deployment {} {}: {}",
            booted.stateroot,
            booted.dirname(),
            origin_path.display()
        )
    })?;

    // The OS.
    let export = ostree_export::export(
        &paths.sysroot.join("ostree/repo"),
        &booted.checksum,
        &workdir.join(ARCHIVE_REPO_DIR),
    )?;

    let footprint = facts.footprint()?;
    let host = facts.host()?;
    let info = info::seed_info(&info::Parts {
        ostree,
        storage,
        host,
        footprint,
        export: &export,
        containers: &containers,
        etc_bytes: etc.bytes,
        var_bytes: var.bytes,
        created: chrono::Utc::now(),
    })?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Collected {
        info,
        etc_dir,
        etc: etc.entries,
        etc_deletions: etc.deletions,
        etc_excluded: etc.excluded,
        var_dir,
        var: var.entries,
        var_excluded: var.excluded,
        containers: containers.specs,
        origin,
        ostree: export,
        warnings,
    })
}

fn skipped_warning(tree: &str, skipped: &[PathBuf]) -> String {
    let shown: Vec<String> = skipped
        .iter()
        .take(5)
        .map(|p| format!("{tree}/{}", p.display()))
        .collect();
    format!(
        "{} sockets, FIFOs or device nodes in {tree} are not archived: {}{}",
        skipped.len(),
        shown.join(", "),
        if skipped.len() > 5 { ", ..." } else { "" }
    )
}
