//! The seed's `/var`: its stateroot's `var`, minus what must not travel.
//!
//! `/var` belongs to the stateroot, not to the commit, so a target's new stateroot starts with
//! an empty one; the seed carries all of it except [`super::exclude::VAR_EXCLUSIONS`]. Only
//! metadata is read (`lstat`, never file contents): the archive writer reads the files later.
//!
//! The walk stays on `/var`'s filesystem: another filesystem mounted below it (container
//! storage, a kubelet volume) is not part of the stateroot. Its mount point directory is kept
//! so the target has it, its content is not; a mount other than container storage is warned
//! about. Sockets, FIFOs and device nodes are runtime objects and are skipped.
//!
//! Like the `/etc` entries, the list is explicit (every path is listed; the writer must not
//! recurse) and in path order (by component).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::fs::{Dir, MetadataExt};

use super::Excluded;
use super::exclude::Exclusions;
use super::walk::{self, Kind};

/// One path of the seed's `/var` to archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VarEntry {
    /// Relative to the stateroot's `var`.
    pub path: PathBuf,
    pub kind: Kind,
    /// Bytes of a regular file (0 for others).
    pub size: u64,
}

/// What of `/var` goes into the seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VarSelection {
    /// In path order.
    pub entries: Vec<VarEntry>,
    /// Bytes of the regular files among the entries, each inode once.
    pub bytes: u64,
    /// Paths dropped by an exclusion rule (the topmost path of each).
    pub excluded: Vec<Excluded>,
    /// Sockets, FIFOs and device nodes (never archived).
    pub skipped: Vec<PathBuf>,
    /// Mount points of other filesystems below `/var` (kept as empty directories).
    pub mounts: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// Select the entries of `var`. `expected_mounts` (relative paths) are mount points that are
/// supposed to be there (container storage) and are not warned about.
pub fn select(
    var: &Path,
    exclusions: &Exclusions,
    expected_mounts: &[PathBuf],
) -> Result<VarSelection> {
    let root = walk::open_root(var)?;
    let dev = root
        .dir_metadata()
        .with_context(|| format!("fstat {}", var.display()))?
        .dev();
    let mut w = Walker {
        var,
        dev,
        exclusions,
        out: VarSelection::default(),
        inodes: HashSet::new(),
    };
    w.walk(&root, Path::new(""))?;
    let mut out = w.out;
    out.entries.sort_by(|a, b| a.path.cmp(&b.path));
    for m in &out.mounts {
        if !expected_mounts.contains(m) {
            out.warnings.push(format!(
                "{} is a mount point of another filesystem; its content does not go into the seed",
                var.join(m).display()
            ));
        }
    }
    Ok(out)
}

struct Walker<'a> {
    var: &'a Path,
    dev: u64,
    exclusions: &'a Exclusions,
    out: VarSelection,
    inodes: HashSet<(u64, u64)>,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Dir, rel: &Path) -> Result<()> {
        for (name, md) in walk::list(dir, &self.var.join(rel))? {
            let child = rel.join(&name);
            if let Some(rule) = self.exclusions.matching(&child) {
                self.out.excluded.push(Excluded::new(&child, rule));
                continue;
            }
            let kind = Kind::of(&md);
            let size = match kind {
                Kind::Special => {
                    self.out.skipped.push(child);
                    continue;
                }
                Kind::File => md.len(),
                Kind::Dir | Kind::Symlink => 0,
            };
            if kind == Kind::File && self.inodes.insert((md.dev(), md.ino())) {
                self.out.bytes = self.out.bytes.saturating_add(size);
            }
            self.out.entries.push(VarEntry {
                path: child.clone(),
                kind,
                size,
            });
            if kind == Kind::Dir {
                if md.dev() != self.dev {
                    self.out.mounts.push(child);
                    continue;
                }
                let sub = walk::open_subdir(dir, &name, &md, &self.var.join(&child))?;
                self.walk(&sub, &child)?;
            }
        }
        Ok(())
    }
}
