//! Merging the staged seed `/etc` into the deployment's `etc`, entry by entry, by rename (rules
//! in the [module docs](super)). Every step makes the destination entry equal to the staged one
//! whatever the destination held, which is why a run over a half-merged `etc` converges.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use cap_std::fs::Dir;
use rustix::fs::RenameFlags;

use super::fsops::{self, Kind};
use super::layer::shown;
use super::{Checkpoint, Step};

pub(super) struct Merge<'a, 'c> {
    /// Directories the layer has entries for (relative to `etc`).
    pub explicit: &'a HashSet<std::path::PathBuf>,
    pub cp: Checkpoint<'c>,
    pub owner: bool,
    pub xattrs: bool,
    /// Entries replaced by one of another kind.
    pub replaced: u64,
}

impl Merge<'_, '_> {
    /// Merge the staged directory `src` into `dst` (both at `rel` below `etc`).
    pub fn dir(&mut self, src: &Dir, dst: &Dir, rel: &Path) -> Result<()> {
        let names =
            fsops::names(src).with_context(|| format!("listing the staged {}", shown(rel)))?;
        for name in names {
            let child = rel.join(&name);
            let at = || shown(&child);
            let s = fsops::lstat(src, &name)
                .with_context(|| format!("stat of the staged {}", at()))?
                .ok_or_else(|| anyhow!("the staged {} vanished", at()))?;
            let d = fsops::lstat(dst, &name).with_context(|| format!("stat {}", at()))?;
            match d {
                None => {
                    (self.cp)(&Step::MoveIn(child.clone()))?;
                    fsops::rename(src, &name, dst, &name, RenameFlags::NOREPLACE)
                        .with_context(|| format!("moving {} into place", at()))?;
                }
                Some(d) if s.kind == Kind::Dir && d.kind == Kind::Dir => {
                    let sub_src = fsops::open_dir(src, &name)
                        .with_context(|| format!("opening the staged {}", at()))?;
                    // Read before the merge empties it (which changes its mtime).
                    let meta =
                        if self.explicit.contains(&child) {
                            Some(fsops::dir_meta(&sub_src).with_context(|| {
                                format!("reading the seed's metadata of {}", at())
                            })?)
                        } else {
                            None
                        };
                    let sub_dst =
                        fsops::open_dir(dst, &name).with_context(|| format!("opening {}", at()))?;
                    self.dir(&sub_src, &sub_dst, &child)?;
                    if let Some(meta) = meta {
                        (self.cp)(&Step::DirMetadata(child.clone()))?;
                        fsops::apply_dir_meta(&sub_dst, &meta, self.owner, self.xattrs)
                            .with_context(|| format!("giving {} the seed's metadata", at()))?;
                    }
                }
                Some(d) if s.kind == Kind::Dir || d.kind == Kind::Dir => {
                    // A directory replaces a non-directory or the reverse: swap them in one
                    // step, so the name never disappears, then drop what came back.
                    tracing::debug!(
                        "{}: the seed's {} replaces a {}",
                        at(),
                        s.kind.describe(),
                        d.kind.describe()
                    );
                    self.replaced += 1;
                    (self.cp)(&Step::ExchangeKind(child.clone()))?;
                    fsops::rename(src, &name, dst, &name, RenameFlags::EXCHANGE)
                        .with_context(|| format!("exchanging {} with the seed's", at()))?;
                    (self.cp)(&Step::RemoveReplaced(child.clone()))?;
                    fsops::remove_tree(src, &name)
                        .with_context(|| format!("removing the replaced {}", at()))?;
                }
                Some(d) => {
                    if s.kind != d.kind {
                        self.replaced += 1;
                    }
                    (self.cp)(&Step::Replace(child.clone()))?;
                    fsops::rename(src, &name, dst, &name, RenameFlags::empty())
                        .with_context(|| format!("replacing {}", at()))?;
                }
            }
        }
        Ok(())
    }
}
