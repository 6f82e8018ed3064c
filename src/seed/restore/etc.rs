//! `/etc`: spool and extract the seed's `etc` layer into staging, check the deletions, write
//! the attempt stamp, merge, delete (see the crash table and the deletion-resume rule in the
//! [module docs](super)).

use std::ffi::OsStr;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use super::deletions;
use super::fsops;
use super::layer;
use super::merge::Merge;
use super::{
    Checkpoint, ETC_SPOOL, ETC_STAGING, ETC_STAMP, RestoreError, RestoreReport, Step, counts,
    no_space, remove_leftovers,
};
use crate::archive::{ExtractOptions, OutsidePrefix, extract_staged};
use crate::oci::ImageManifest;
use crate::seed::fetch::layer_with_role;
use crate::seed::format::{PREFIX_ETC, ROLE_ETC};
use crate::seed::source::SeedSource;

/// What the stamp says: an attempt with this layer on this `etc` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    layer: String,
    etc_dev: u64,
    etc_ino: u64,
}

fn read_stamp(parent: &Dir, shown: &Path) -> Result<Option<Stamp>> {
    let path = shown.join(ETC_STAMP);
    let Some(bytes) = fsops::read_small(parent, OsStr::new(ETC_STAMP), 4096)
        .with_context(|| format!("reading {}", path.display()))?
    else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            // Written atomically by ibu, so this is not a torn write; treat it as foreign.
            tracing::warn!("ignoring unreadable {}: {e}", path.display());
            Ok(None)
        }
    }
}

pub(super) fn restore(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    deployment_dir: &Path,
    staging_parent: &Path,
    deletion_entries: &[String],
    cp: Checkpoint<'_>,
) -> Result<RestoreReport> {
    let layer = layer_with_role(manifest, ROLE_ETC)?;
    let dels = deletions::parse(deletion_entries)?;
    let etc_path = deployment_dir.join("etc");
    let deployment = fsops::open_path(deployment_dir)?;
    let etc = fsops::open_dir(&deployment, OsStr::new("etc"))
        .with_context(|| format!("opening {} (not following a symlink)", etc_path.display()))?;
    let parent = fsops::open_path(staging_parent)?;
    let etc_node = fsops::fstat(&etc).with_context(|| format!("stat {}", etc_path.display()))?;
    let parent_node =
        fsops::fstat(&parent).with_context(|| format!("stat {}", staging_parent.display()))?;
    if etc_node.dev != parent_node.dev {
        return Err(RestoreError::CrossDevice {
            staging: staging_parent.to_path_buf(),
            dest: etc_path,
        }
        .into());
    }
    if let (Ok(p), Ok(e)) = (staging_parent.canonicalize(), etc_path.canonicalize())
        && p.starts_with(&e)
    {
        bail!(
            "staging parent {} is inside {}",
            staging_parent.display(),
            etc_path.display()
        );
    }

    let stamp = Stamp {
        layer: layer.digest.clone(),
        etc_dev: etc_node.dev,
        etc_ino: etc_node.ino,
    };
    let resumed = read_stamp(&parent, staging_parent)?.as_ref() == Some(&stamp);
    if resumed {
        tracing::info!(
            "resuming an interrupted restore of /etc into {}",
            etc_path.display()
        );
    }
    remove_leftovers(&parent, staging_parent, ETC_STAGING, cp)?;
    remove_leftovers(&parent, staging_parent, ETC_SPOOL, cp)?;

    tracing::info!(layer = %layer.digest, etc = %etc_path.display(), "restoring the seed's /etc");
    let opts = ExtractOptions {
        strip_prefix: Some(PathBuf::from(PREFIX_ETC)),
        outside_prefix: OutsidePrefix::Reject,
        allow_devices: false,
        // Hostile-seed defence: /etc has no business carrying setuid/setgid files or file
        // capabilities.
        allow_setid: false,
        ..ExtractOptions::default()
    };
    let staged = stage(src, layer, &parent, staging_parent, &opts, cp)
        .map_err(|e| no_space(e, staging_parent, "/etc"));
    let (extracted, explicit) = match staged {
        Ok(s) => s,
        Err(e) => {
            cleanup(&parent, staging_parent);
            return Err(e);
        }
    };

    let mut report = counts(&extracted);
    report.resumed = resumed;
    let result = (|| -> Result<()> {
        let staging =
            fsops::open_dir(&parent, OsStr::new(ETC_STAGING)).context("opening the staged etc")?;
        deletions::check(&staging, &etc, &dels, resumed)?;
        if !resumed {
            cp(&Step::WriteStamp)?;
            let bytes = serde_json::to_vec(&stamp)?;
            fsops::write_atomic(&parent, ETC_STAMP, &bytes)
                .with_context(|| format!("writing {}", staging_parent.join(ETC_STAMP).display()))?;
        }
        let mut merge = Merge {
            explicit: &explicit,
            cp: &mut *cp,
            owner: opts.preserve_owner,
            xattrs: opts.preserve_xattrs,
            replaced: 0,
        };
        merge
            .dir(&staging, &etc, Path::new(""))
            .with_context(|| format!("merging the seed's /etc into {}", etc_path.display()))?;
        report.replaced = merge.replaced;
        deletions::apply(&etc, &dels, cp, &mut report)?;
        cp(&Step::Sync)?;
        rustix::fs::syncfs(&etc).with_context(|| format!("syncing {}", etc_path.display()))?;
        cp(&Step::RemoveStaging)?;
        fsops::remove_tree(&parent, OsStr::new(ETC_STAGING))
            .with_context(|| format!("removing {}", staging_parent.join(ETC_STAGING).display()))?;
        Ok(())
    })();
    if let Err(e) = result {
        cleanup(&parent, staging_parent);
        return Err(no_space(e, &etc_path, "/etc"));
    }
    tracing::info!(etc = %etc_path.display(), "restored /etc: {}", report.summary());
    Ok(report)
}

/// Spool, extract, list the explicit directories, remove the spool.
fn stage(
    src: &dyn SeedSource,
    layer: &crate::oci::Descriptor,
    parent: &Dir,
    shown: &Path,
    opts: &ExtractOptions,
    cp: Checkpoint<'_>,
) -> Result<(
    crate::archive::ExtractReport,
    std::collections::HashSet<PathBuf>,
)> {
    cp(&Step::Spool)?;
    let mut spool = layer::spool(src, layer, parent, ETC_SPOOL)
        .with_context(|| format!("spooling the seed's etc layer into {}", shown.display()))?;
    cp(&Step::Extract)?;
    let extracted =
        extract_staged(&mut spool, parent, Path::new(ETC_STAGING), opts).with_context(|| {
            format!(
                "extracting the seed's etc layer {} into {}",
                layer.digest,
                shown.join(ETC_STAGING).display()
            )
        })?;
    spool
        .seek(SeekFrom::Start(0))
        .context("rewinding the spool")?;
    let explicit = layer::explicit_dirs(&mut spool, PREFIX_ETC)
        .with_context(|| format!("listing the directories of layer {}", layer.digest))?;
    drop(spool);
    cp(&Step::RemoveSpool)?;
    fsops::remove_tree(parent, OsStr::new(ETC_SPOOL))
        .with_context(|| format!("removing {}", shown.join(ETC_SPOOL).display()))?;
    Ok((extracted, explicit))
}

/// Best effort: remove staging and spool after a failure (the stamp stays).
fn cleanup(parent: &Dir, shown: &Path) {
    for name in [ETC_STAGING, ETC_SPOOL] {
        if let Err(e) = fsops::remove_tree(parent, OsStr::new(name)) {
            tracing::warn!("could not remove {}: {e}", shown.join(name).display());
        }
    }
}

pub(super) fn discard(staging_parent: &Path) -> Result<()> {
    let parent = fsops::open_path(staging_parent)?;
    remove_leftovers(&parent, staging_parent, ETC_STAGING, &mut |_| Ok(()))?;
    remove_leftovers(&parent, staging_parent, ETC_SPOOL, &mut |_| Ok(()))?;
    for name in [ETC_STAMP.to_string(), format!(".{ETC_STAMP}.tmp")] {
        fsops::remove_tree(&parent, OsStr::new(&name))
            .with_context(|| format!("removing {}", staging_parent.join(&name).display()))?;
    }
    fsops::sync_dir(&parent).with_context(|| format!("syncing {}", staging_parent.display()))
}
