//! Restoring a seed's `/var` and `/etc` on a target during Prep (LCA §4 step 6): after the
//! seed's commit is deployed into a new stateroot, [`restore_var`] makes the stateroot's `var`
//! the seed's `/var`, and [`restore_etc`] applies the seed's `/etc` difference to the new
//! deployment's `etc` (which `ostree admin deploy` made from the commit's `usr/etc` defaults)
//! and then deletes the paths of `etc.deletions`.
//!
//! # Why it is built this way
//!
//! - **The seed is hostile until proven otherwise.** Layers are extracted by
//!   [`extract_staged`](crate::archive::extract_staged) (cap-std handles, no `..`, no symlink
//!   followed, device nodes rejected; for `/etc` also setuid/setgid files and file capabilities —
//!   a seed's `/etc` has no business carrying them) into a staging directory, never into the
//!   live tree. Everything after that — the merge into `etc`, the deletions — goes through
//!   directory handles opened with `O_NOFOLLOW`, one path component at a time
//!   (`restore/fsops.rs`), so no symlink in the seed or in the target can redirect a write or a
//!   removal outside `etc`/`var`. A symlink in the seed pointing anywhere is restored as a
//!   symlink; nothing is ever written through one.
//! - **Everything moves by `rename`**, so staging lives on the filesystem of its destination:
//!   next to `var` in the stateroot, and in the caller's `staging_parent` for `/etc` (the
//!   deployment directory itself is immutable).
//! - **A crash at any point, then the same call again, converges to the same result.** Neither
//!   function resumes half-done work from its staging: a run first removes whatever an
//!   interrupted run left in staging and extracts afresh, and every later step is idempotent
//!   against a fresh staging (it makes the destination entry equal to the staged one whatever
//!   the destination holds). The tables below list every crash point.
//!
//! # `/var`: staged, then exchanged
//!
//! The `var` layer (prefix `seed/var`) is extracted into `<stateroot>/var.ibu-restore`
//! ([`VAR_STAGING`]), which gets the metadata (mode, owner, xattrs, mtime) of the stateroot's
//! current `var` directory — the layer's `seed/var` entry is synthesized by the writer, the
//! directory itself belongs to ostree's `os-init` — and is then swapped with `var` in one
//! `renameat2(RENAME_EXCHANGE)`; the old `var`, now under the staging name, is removed. `var`
//! therefore always exists and is always either the old or the complete new tree. Setuid files
//! and file capabilities are allowed in `/var` (the seed's author controls the whole OS commit
//! anyway; program state may legitimately carry them); device nodes are not.
//!
//! | crash during / after | on disk | the next run |
//! |---|---|---|
//! | removing leftovers | part of a leftover | removes the rest, then as below |
//! | extraction | `.var.ibu-restore.partial-*` (partial); `var` untouched | removes the partial, extracts again |
//! | extraction done, before the exchange | `var.ibu-restore` = complete new tree; `var` = old | removes it (it need not know which tree it is), extracts again |
//! | the exchange | `var` = new; `var.ibu-restore` = old (`RENAME_EXCHANGE` is atomic) | removes the old one, extracts and exchanges again: same content |
//! | removing the old tree | part of the old tree | removes the rest, extracts and exchanges again |
//! | returning | done | does it all again: same content |
//!
//! Running it again replaces `var` wholesale: it belongs to Prep, before anything else writes
//! into the new stateroot's `var`.
//!
//! # `/etc`: staged, then merged
//!
//! The `etc` layer (prefix `seed/etc`) is first spooled to `<staging_parent>/ibu-restore-etc.tar`
//! ([`ETC_SPOOL`]) — so its digest is verified before anything is extracted, and the list of
//! directory entries it names can be read back (`restore/layer.rs`) — then extracted into
//! `<staging_parent>/ibu-restore-etc` ([`ETC_STAGING`]). Then, before `etc` is touched, every
//! `etc.deletions` path is checked against what `etc` will be after the merge
//! (`restore/deletions.rs`). Then the merge (`restore/merge.rs`), depth first in name order:
//!
//! - a staged entry whose name is free in `etc` is moved in (a directory with its subtree);
//! - a staged file or symlink is renamed over the file or symlink in `etc` (atomic);
//! - a staged entry of another kind than the one in `etc` (file↔directory↔symlink: `Replaced`
//!   in the seed's diff) is exchanged with it (`RENAME_EXCHANGE`), and what came back into
//!   staging is removed;
//! - a directory on both sides is merged recursively and then, if the layer has an entry for it,
//!   gets the seed's mode, owner, xattrs (SELinux labels and ACLs included; the target's
//!   `security.selinux` stays when the seed has none) and mtime. A directory the layer only
//!   implies (the parent of a modified file, which the seed did not change) keeps the target's
//!   metadata. `etc` itself keeps its own.
//!
//! Then the deletions (a directory recursively; a symlink is removed itself, never followed),
//! a `syncfs`, and the staging directory is removed.
//!
//! | crash during / after | on disk | the next run |
//! |---|---|---|
//! | removing leftovers, spooling, extracting | leftovers, a partial spool or `.ibu-restore-etc.partial-*`; `etc` untouched | removes them, starts over |
//! | checking the deletions | staging; `etc` untouched; no stamp | starts over as a first attempt |
//! | writing the stamp | a temporary stamp file or the stamp; `etc` untouched | starts over (resumed if the stamp is there) |
//! | any merge step | `etc` partly merged; staging partly emptied | extracts afresh and merges again: entries already moved in are replaced by identical ones, directories get their metadata again |
//! | an exchange, before removing what came back | the old entry in staging | removed with the staging leftovers |
//! | the deletions | some paths deleted | merges again (identical), deletes the rest; the paths already gone are accepted (resumed) |
//! | the `syncfs`, removing staging, returning | done (staging perhaps partly there) | does it all again: same `etc` |
//!
//! **The deletion-resume rule.** LCA fails the step when an `etc.deletions` path is missing, and
//! so does a first attempt here — before anything in `etc` has changed, naming every missing
//! path ([`RestoreError::MissingDeletions`]): a target whose defaults differ from the seed's
//! should not be half-configured. Before its first change to `etc`, a run writes the stamp
//! `<staging_parent>/ibu-restore-etc.stamp` ([`ETC_STAMP`]), durably, naming the etc layer's
//! digest and the identity (device and inode) of the `etc` directory. A run that finds a stamp
//! naming the same layer and the same `etc` is a *resumed* attempt: `etc` may already have lost
//! some deletion paths, and a missing path is counted in [`RestoreReport::already_deleted`]
//! instead of failing. A stamp for another layer or another `etc` (a new deployment) is
//! ignored and replaced. The stamp stays after success — a crash between the last step and
//! the caller recording success must still converge — and is removed with
//! [`discard_etc_attempt`] when the caller is done with the attempt (Prep finished, or aborted
//! and the stateroot removed).
//!
//! Deletion paths must be `/etc/<relative path>` without `.`, `..` or empty components
//! ([`RestoreError::BadDeletion`]), and must not go through a symlink, in `etc` or brought by
//! the seed: such an entry is rejected on every attempt.
//!
//! # Testing crashes
//!
//! [`restore_var_with`] and [`restore_etc_with`] announce every step that changes the
//! filesystem to a [`Checkpoint`] before taking it ([`Step`]); the tests stop a run there (by
//! unwinding, so that no cleanup runs, as in a real crash) and check that the next run
//! converges. [`restore_var`] and [`restore_etc`] pass a checkpoint that does nothing.

mod deletions;
mod etc;
mod fsops;
mod layer;
mod merge;
mod var;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::fs::Dir;

use super::source::SeedSource;
use crate::archive::ExtractReport;
use crate::oci::ImageManifest;

/// Staging name of the new `var`, next to the stateroot's `var`.
pub const VAR_STAGING: &str = "var.ibu-restore";
/// Staging directory of the `etc` layer, in the staging parent.
pub const ETC_STAGING: &str = "ibu-restore-etc";
/// The verified, uncompressed `etc` layer, in the staging parent (removed after extraction).
pub const ETC_SPOOL: &str = "ibu-restore-etc.tar";
/// Says that an attempt to restore `/etc` started (see the deletion-resume rule).
pub const ETC_STAMP: &str = "ibu-restore-etc.stamp";

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Regular files restored (hard links included).
    pub files: u64,
    /// Directories restored (not counting `var` or `etc` itself).
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries of `etc` replaced by one of another kind (file↔directory↔symlink).
    pub replaced: u64,
    /// `etc.deletions` paths deleted by this run.
    pub deleted: u64,
    /// `etc.deletions` paths already gone, accepted because the run resumed an attempt.
    pub already_deleted: u64,
    /// Bytes of file data restored.
    pub bytes: u64,
    /// Whether the run resumed an interrupted attempt (`/etc` only).
    pub resumed: bool,
}

impl RestoreReport {
    /// One line for logs and status messages.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} files ({}), {} directories, {} symlinks",
            self.files,
            crate::humanize::bytes(self.bytes),
            self.dirs,
            self.symlinks
        );
        if self.replaced > 0 {
            s.push_str(&format!(", {} replaced by another kind", self.replaced));
        }
        if self.deleted > 0 || self.already_deleted > 0 {
            s.push_str(&format!(", {} deleted", self.deleted));
        }
        if self.already_deleted > 0 {
            s.push_str(&format!(
                " ({} already gone after an interrupted attempt)",
                self.already_deleted
            ));
        }
        if self.resumed {
            s.push_str("; resumed");
        }
        s
    }
}

/// A step that changes the filesystem, announced to the [`Checkpoint`] before it is taken.
/// Paths of merge steps are relative to `etc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Removing what an interrupted run left (name in the staging parent or stateroot).
    RemoveLeftover(PathBuf),
    /// Writing the verified `etc` layer to the spool file.
    Spool,
    /// Extracting a layer into staging.
    Extract,
    RemoveSpool,
    /// Writing the stamp that says an `/etc` attempt started.
    WriteStamp,
    /// Giving the staged `var` the metadata of the current `var` directory.
    VarRootMetadata,
    /// Exchanging the staged `var` with the stateroot's `var`.
    ExchangeVar,
    /// Removing the previous `var` (under the staging name after the exchange).
    RemoveOldVar,
    /// Moving a staged entry to a free name in `etc`.
    MoveIn(PathBuf),
    /// Renaming a staged file or symlink over the one in `etc`.
    Replace(PathBuf),
    /// Exchanging a staged entry with the `etc` entry of another kind.
    ExchangeKind(PathBuf),
    /// Removing what an exchange put into staging.
    RemoveReplaced(PathBuf),
    /// Giving a directory of `etc` the seed's metadata.
    DirMetadata(PathBuf),
    /// Deleting an `etc.deletions` path (as listed).
    Delete(String),
    /// Flushing the filesystem of `etc`.
    Sync,
    /// Removing the emptied staging directory.
    RemoveStaging,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RemoveLeftover(p) => write!(f, "remove leftover {}", p.display()),
            Step::Spool => write!(f, "spool the etc layer"),
            Step::Extract => write!(f, "extract the layer into staging"),
            Step::RemoveSpool => write!(f, "remove the spooled layer"),
            Step::WriteStamp => write!(f, "write the attempt stamp"),
            Step::VarRootMetadata => write!(f, "copy the metadata of var to the staged var"),
            Step::ExchangeVar => write!(f, "exchange the staged var with var"),
            Step::RemoveOldVar => write!(f, "remove the previous var"),
            Step::MoveIn(p) => write!(f, "move in /etc/{}", p.display()),
            Step::Replace(p) => write!(f, "replace /etc/{}", p.display()),
            Step::ExchangeKind(p) => write!(f, "exchange /etc/{} (other kind)", p.display()),
            Step::RemoveReplaced(p) => write!(f, "remove the replaced /etc/{}", p.display()),
            Step::DirMetadata(p) => write!(f, "set the metadata of /etc/{}", p.display()),
            Step::Delete(p) => write!(f, "delete {p}"),
            Step::Sync => write!(f, "sync"),
            Step::RemoveStaging => write!(f, "remove staging"),
        }
    }
}

/// Called before every [`Step`]; an error stops the restore there (as a failure: the run
/// cleans up its staging). Tests simulate crashes by unwinding from it instead.
pub type Checkpoint<'a> = &'a mut dyn FnMut(&Step) -> Result<()>;

/// Restore errors callers branch on (find them with `anyhow::Error::downcast_ref`). A hostile
/// layer entry is an [`ExtractError`](crate::archive::ExtractError) instead.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The filesystem filled up; staging was removed, a run after freeing space converges.
    #[error(
        "no space left on the filesystem of {dir} while restoring the seed's {tree}; free \
         space there and run again"
    )]
    NoSpace { dir: PathBuf, tree: &'static str },
    /// A malformed or unsafe `etc.deletions` entry (rejected on every attempt).
    #[error("etc.deletions entry {entry:?} rejected: {why}")]
    BadDeletion { entry: String, why: String },
    /// First attempt only: `etc.deletions` names paths the new deployment's `etc` lacks.
    #[error(
        "etc.deletions names {} that the new deployment's /etc does not have (do the target's \
         defaults differ from the seed's?): {}",
        if paths.len() == 1 { "a path" } else { "paths" },
        paths.join(", ")
    )]
    MissingDeletions { paths: Vec<String> },
    /// Staging must be on the destination's filesystem (entries move by rename).
    #[error("staging directory {staging} is not on the filesystem of {dest}")]
    CrossDevice { staging: PathBuf, dest: PathBuf },
}

/// Make the stateroot's `var` (`stateroot_dir/var`) exactly the seed's `/var`. See the
/// [module docs](self) for how a crash is recovered: call it again.
pub fn restore_var(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    stateroot_dir: &Path,
) -> Result<RestoreReport> {
    restore_var_with(src, manifest, stateroot_dir, &mut |_| Ok(()))
}

/// [`restore_var`], announcing every step to `checkpoint`.
pub fn restore_var_with(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    stateroot_dir: &Path,
    checkpoint: Checkpoint<'_>,
) -> Result<RestoreReport> {
    var::restore(src, manifest, stateroot_dir, checkpoint)
}

/// Apply the seed's `/etc` difference to `deployment_dir/etc` and delete the `deletions`
/// (`/etc/...` paths, the seed's `etc.deletions`). `staging_parent` must be on the filesystem
/// of the deployment (the stateroot directory is a good one); the staging directory, the spool
/// and the attempt stamp go there. See the [module docs](self) for the crash states and the
/// deletion-resume rule.
pub fn restore_etc(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    deployment_dir: &Path,
    staging_parent: &Path,
    deletions: &[String],
) -> Result<RestoreReport> {
    restore_etc_with(
        src,
        manifest,
        deployment_dir,
        staging_parent,
        deletions,
        &mut |_| Ok(()),
    )
}

/// [`restore_etc`], announcing every step to `checkpoint`.
pub fn restore_etc_with(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    deployment_dir: &Path,
    staging_parent: &Path,
    deletions: &[String],
    checkpoint: Checkpoint<'_>,
) -> Result<RestoreReport> {
    etc::restore(
        src,
        manifest,
        deployment_dir,
        staging_parent,
        deletions,
        checkpoint,
    )
}

/// Forget an `/etc` attempt: remove the stamp and whatever staging a run left in
/// `staging_parent`. The next [`restore_etc`] is a first attempt again.
pub fn discard_etc_attempt(staging_parent: &Path) -> Result<()> {
    etc::discard(staging_parent)
}

/// The [`RestoreError::NoSpace`] context for `err` if it was caused by a full filesystem
/// (`ENOSPC`, or `EDQUOT` for a quota).
fn no_space(err: anyhow::Error, dir: &Path, tree: &'static str) -> anyhow::Error {
    let full = err.chain().any(|cause| {
        let errno = cause
            .downcast_ref::<std::io::Error>()
            .and_then(rustix::io::Errno::from_io_error)
            .or_else(|| cause.downcast_ref::<rustix::io::Errno>().copied());
        matches!(
            errno,
            Some(rustix::io::Errno::NOSPC) | Some(rustix::io::Errno::DQUOT)
        )
    });
    if full {
        err.context(RestoreError::NoSpace {
            dir: dir.to_path_buf(),
            tree,
        })
    } else {
        err
    }
}

/// Remove `name` and the partial extractions of `name` (`.<name>.partial-*`) from `dir`.
fn remove_leftovers(dir: &Dir, shown: &Path, name: &str, cp: Checkpoint<'_>) -> Result<()> {
    let partial = format!(".{name}.partial-");
    let names = fsops::names(dir).with_context(|| format!("listing {}", shown.display()))?;
    for n in names {
        let s = n.to_string_lossy();
        if s == name || s.starts_with(&partial) {
            let path = shown.join(&n);
            tracing::info!("removing {} left by an interrupted run", path.display());
            cp(&Step::RemoveLeftover(PathBuf::from(&n)))?;
            fsops::remove_tree(dir, &n).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The report of an extraction (the destination's own entry not counted).
fn counts(r: &ExtractReport) -> RestoreReport {
    RestoreReport {
        files: r.files + r.hardlinks,
        dirs: r.dirs - u64::from(r.root_metadata && r.dirs > 0),
        symlinks: r.symlinks,
        bytes: r.bytes,
        ..RestoreReport::default()
    }
}
