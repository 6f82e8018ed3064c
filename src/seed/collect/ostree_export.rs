//! The seed's OS: the booted commit's objects, exported into an archive-mode repository.
//!
//! A target needs the booted commit as ostree objects it can import and verify. The system
//! repository is `bare` (files stored as they are checked out, shared by hardlinks with the
//! deployments), which is neither portable nor compressed. The seed carries *archive* objects
//! instead: each content object zlib-compressed on its own, named by its checksum, which is
//! what lets a target fetch just the objects it lacks (see [`crate::seed::format`]).
//!
//! How: create an archive repository in the work directory with libostree, then pull the
//! commit into it from the system repository through a `file://` URL — what `ostree
//! pull-local` does, but in-process, because ibu already links libostree (no dependency on the
//! CLI, errors as values, progress through an `OstreeAsyncProgress`). libostree imports from
//! a local repository of another mode by streaming every object and writing it anew, which is
//! also where the conversion to archive happens. The pull is **untrusted**
//! (`OSTREE_REPO_PULL_FLAGS_UNTRUSTED`): every object's checksum is verified while it is
//! written, so a corrupt object on the seed host fails the seed here instead of spreading to a
//! fleet. The source repository is only read (the seed host is left as it was); the commit's
//! detached metadata (`.commitmeta`, e.g. signatures) comes along. fsync is disabled in the work
//! repository: it is scratch, and a crash means collecting again.
//!
//! This works the same on a booted host (system repository `/ostree/repo`) and on a directory
//! sysroot (`DIR/ostree/repo`): it is only ever a path.
//!
//! Then the objects reachable from the commit (`ostree_repo_traverse_commit`: the commit, its
//! dirtrees and dirmetas, its content objects) plus the detached metadata are listed with their
//! path in the archive repository (`objects/<xx>/<rest>.<ext>`, content objects `.filez`) and
//! their size, sorted by object name (`<checksum>.<ext>`, the name the seed format uses).
//!
//! Cost, measured with `tests/seed_collect_cost.rs` on a 2.9 GB deployment (this build
//! machine's `/usr`, 71 052 objects, 65 837 of them content): the whole collection took 150 s on
//! two cores shared with other builds, nearly all of it this export (reading, checksumming and
//! compressing every file), and the archive objects take 952 MB (33 % of the deployment). The
//! work directory needs about that much free space.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ostree::gio;

/// One object in the archive repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportedObject {
    /// `<checksum>.<ext>`, e.g. `3a…9f.filez` (the format's object name).
    pub name: String,
    /// Relative to the archive repository: `objects/3a/…9f.filez`.
    pub path: PathBuf,
    /// Bytes of the object file.
    pub size: u64,
}

/// The exported commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OstreeExport {
    /// The archive repository (in the work directory).
    pub repo: PathBuf,
    pub commit: String,
    /// Every object of the commit, sorted by name.
    pub objects: Vec<ExportedObject>,
    /// Sum of the object sizes.
    pub bytes: u64,
}

/// Export `commit` from the repository `source` into a new archive repository at `dest`
/// (which must not exist yet).
pub fn export(source: &Path, commit: &str, dest: &Path) -> Result<OstreeExport> {
    let started = Instant::now();
    if dest.symlink_metadata().is_ok() {
        bail!(
            "{} already exists (left over from an earlier collection?); remove it or use another \
             work directory",
            dest.display()
        );
    }
    let archive = ostree::Repo::new_for_path(dest);
    archive
        .create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
        .with_context(|| format!("creating archive repository {}", dest.display()))?;
    archive.set_disable_fsync(true);
    // Archive objects are zlib-compressed one by one, which is most of an export's time. Level 1
    // instead of libostree's 6: on the VM images' 896 MiB commit, 13 s instead of 23 s on this
    // host (436 s at level 6 in a TCG guest) for a 7 % larger export (382 vs 356 MiB) — and a
    // target fetches only the objects it lacks, so size matters less than a seed host's time.
    let config = archive.config();
    config.set_integer("archive", "zlib-level", 1);
    archive
        .write_config(&config)
        .with_context(|| format!("configuring archive repository {}", dest.display()))?;
    archive
        .reload_config(gio::Cancellable::NONE)
        .with_context(|| format!("reloading archive repository {}", dest.display()))?;
    tracing::info!(commit, source = %source.display(), dest = %dest.display(), "exporting the ostree commit");

    crate::repo::pull_local(&archive, source, commit, true).with_context(|| {
        format!(
            "exporting commit {commit} from {} into {}",
            source.display(),
            dest.display()
        )
    })?;

    let (_, state) = archive
        .load_commit(commit)
        .with_context(|| format!("loading commit {commit} from {}", dest.display()))?;
    if state.contains(ostree::RepoCommitState::PARTIAL) {
        bail!(
            "commit {commit} is incomplete in {} after the pull",
            dest.display()
        );
    }

    let reachable = archive
        .traverse_commit(commit, 0, gio::Cancellable::NONE)
        .with_context(|| {
            format!(
                "listing the objects of commit {commit} in {}",
                dest.display()
            )
        })?;
    let mut objects = Vec::with_capacity(reachable.len() + 1);
    for o in &reachable {
        objects.push(object(dest, o.checksum(), o.object_type())?);
    }
    let detached = archive
        .read_commit_detached_metadata(commit, gio::Cancellable::NONE)
        .with_context(|| format!("reading the detached metadata of commit {commit}"))?;
    if detached.is_some() {
        objects.push(object(dest, commit, ostree::ObjectType::CommitMeta)?);
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes = objects.iter().map(|o| o.size).sum();
    tracing::info!(
        commit,
        objects = objects.len(),
        bytes,
        seconds = started.elapsed().as_secs_f64(),
        "exported the ostree commit"
    );
    Ok(OstreeExport {
        repo: dest.to_path_buf(),
        commit: commit.to_string(),
        objects,
        bytes,
    })
}

/// The file extension of an object type in an archive repository.
pub fn archive_extension(t: ostree::ObjectType) -> Result<&'static str> {
    Ok(match t {
        ostree::ObjectType::File => "filez",
        ostree::ObjectType::DirTree => "dirtree",
        ostree::ObjectType::DirMeta => "dirmeta",
        ostree::ObjectType::Commit => "commit",
        ostree::ObjectType::CommitMeta => "commitmeta",
        other => bail!("unexpected ostree object type {other:?} in a commit"),
    })
}

fn object(repo: &Path, checksum: &str, t: ostree::ObjectType) -> Result<ExportedObject> {
    let ext = archive_extension(t)?;
    if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid object checksum {checksum:?}");
    }
    let name = format!("{checksum}.{ext}");
    let path = PathBuf::from(format!(
        "objects/{}/{}.{ext}",
        &checksum[..2],
        &checksum[2..]
    ));
    let full = repo.join(&path);
    let md = std::fs::symlink_metadata(&full)
        .with_context(|| format!("object {name} in {}", repo.display()))?;
    if !md.is_file() {
        bail!("object {name} is not a regular file at {}", full.display());
    }
    Ok(ExportedObject {
        name,
        path,
        size: md.size(),
    })
}
