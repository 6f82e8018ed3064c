//! The seed's `/etc` as a difference from its commit's defaults, like `ostree admin config-diff`.
//!
//! An ostree deployment's `/etc` starts as a copy of the commit's `usr/etc` and then takes the
//! host's configuration. A target deploys the same commit, so it already has the defaults; the
//! seed only needs to carry what the seed's administrators changed:
//!
//! - **added**: present in `etc`, absent from `usr/etc`;
//! - **modified**: present in both as the same kind, but different content (regular files),
//!   symlink target, permission bits, owner, group or extended attributes (SELinux labels and
//!   ACLs are xattrs, so a relabel counts: the seed's tar keeps them, LCA §4). Timestamps do
//!   not count: every copy has new ones;
//! - **replaced**: the kind differs (a file became a directory or a symlink, ...): the target
//!   must remove what its defaults put there before extracting the seed's;
//! - **deleted**: present in `usr/etc`, absent from `etc`; listed in `etc.deletions` as
//!   `/etc/...`, a deleted directory once (its children go with it).
//!
//! Unlike `ostree admin config-diff` (which ignores xattrs) the comparison includes extended
//! attributes, because the seed's archive carries them and a target should end up with exactly
//! the seed's labels. Paths matched by [`super::exclude::ETC_EXCLUSIONS`] are left out of both
//! lists (a target keeps its own there) and reported.
//!
//! The entries are **explicit**: a directory entry stands for the directory itself, and every
//! entry under an added directory is listed too, so the archive writer must not recurse. Each
//! entry's parent is either an entry itself or a directory the commit's defaults already have.
//! Both lists are in path order (by component), so a directory comes right before its subtree.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::fs::{Dir, Metadata, MetadataExt};

use super::Excluded;
use super::exclude::Exclusions;
use super::walk::{self, Kind};

/// How an entry differs from the commit's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Modified,
    /// The kind differs from the default's (e.g. a file replaced by a symlink).
    Replaced,
}

/// One path of the seed's `/etc` to archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EtcEntry {
    /// Relative to the deployment's `etc`.
    pub path: PathBuf,
    pub kind: Kind,
    pub change: Change,
    /// Bytes of a regular file (0 for others).
    pub size: u64,
}

/// The difference of a deployment's `etc` from its `usr/etc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcDiff {
    /// Added, modified and replaced entries, in path order.
    pub entries: Vec<EtcEntry>,
    /// Deleted defaults as `/etc/...` paths, in path order; a directory once.
    pub deletions: Vec<PathBuf>,
    /// Differences left out by an exclusion rule (the topmost path of each).
    pub excluded: Vec<Excluded>,
    /// Sockets, FIFOs and device nodes found in `etc` (never archived).
    pub skipped: Vec<PathBuf>,
    /// Bytes of the regular files among the entries, each inode once.
    pub bytes: u64,
    pub warnings: Vec<String>,
}

impl EtcDiff {
    /// The content of `etc.deletions`: one `/etc/...` path per line.
    pub fn deletions_file(&self) -> Result<String> {
        lines_file(&self.deletions, "etc.deletions")
    }
}

/// One path per line, each ending in a newline; a path that cannot be a line is an error.
pub(crate) fn lines_file(paths: &[PathBuf], what: &str) -> Result<String> {
    let mut out = String::new();
    for p in paths {
        let s = p
            .to_str()
            .with_context(|| format!("{}: path {} is not UTF-8", what, p.display()))?;
        if s.contains('\n') {
            anyhow::bail!("{what}: path {s:?} contains a newline and cannot be listed");
        }
        out.push_str(s);
        out.push('\n');
    }
    Ok(out)
}

/// Compare `etc` (the deployment's) with `defaults` (its `usr/etc`).
pub fn diff(etc: &Path, defaults: &Path, exclusions: &Exclusions) -> Result<EtcDiff> {
    let cur = walk::open_root(etc)?;
    let def = walk::open_root(defaults)?;
    let mut w = Walker {
        etc,
        defaults,
        exclusions,
        out: EtcDiff::default(),
        inodes: HashSet::new(),
    };
    w.compare_dirs(&cur, Some(&def), Path::new(""))?;
    let mut out = w.out;
    out.entries.sort_by(|a, b| a.path.cmp(&b.path));
    out.deletions.sort();
    out.warnings
        .extend(disk_identity_warnings(&cur, &out.entries));
    Ok(out)
}

struct Walker<'a> {
    etc: &'a Path,
    defaults: &'a Path,
    exclusions: &'a Exclusions,
    out: EtcDiff,
    inodes: HashSet<(u64, u64)>,
}

impl Walker<'_> {
    /// Compare the directory `rel` of `etc` (`cur`) with its default (`def`, absent when the
    /// whole directory is new).
    fn compare_dirs(&mut self, cur: &Dir, def: Option<&Dir>, rel: &Path) -> Result<()> {
        let cur_list = walk::list(cur, &self.etc.join(rel))?;
        let def_list = match def {
            Some(d) => walk::list(d, &self.defaults.join(rel))?,
            None => Vec::new(),
        };
        let mut names: Vec<&OsString> = cur_list.iter().map(|(n, _)| n).collect();
        names.extend(def_list.iter().map(|(n, _)| n));
        names.sort();
        names.dedup();
        let find = |list: &[(OsString, Metadata)], name: &OsString| {
            list.binary_search_by(|(n, _)| n.cmp(name))
                .ok()
                .map(|i| list[i].1.clone())
        };
        for name in names {
            let child = rel.join(name);
            let c = find(&cur_list, name);
            let d = find(&def_list, name);
            if let Some(rule) = self.exclusions.matching(&child) {
                let differs = match (&c, &d, def) {
                    (Some(c), Some(d), Some(def)) => {
                        self.differs(cur, def, name, c, d, &child)?.is_some()
                    }
                    _ => true,
                };
                if differs {
                    self.out.excluded.push(Excluded::new(&child, rule));
                }
                continue;
            }
            // A default exists only where the directory has defaults at all.
            match (c, d.zip(def)) {
                (Some(c), None) => self.add_subtree(cur, name, &c, &child, Change::Added)?,
                (None, Some(_)) => self.out.deletions.push(Path::new("/etc").join(&child)),
                (Some(c), Some((d, def))) => {
                    let (ck, dk) = (Kind::of(&c), Kind::of(&d));
                    if ck == Kind::Special {
                        self.out.skipped.push(child);
                        continue;
                    }
                    if ck != dk {
                        self.add_subtree(cur, name, &c, &child, Change::Replaced)?;
                        continue;
                    }
                    if self.differs(cur, def, name, &c, &d, &child)?.is_some() {
                        self.push(&child, &c, Change::Modified);
                    }
                    if ck == Kind::Dir {
                        let shown_c = self.etc.join(&child);
                        let shown_d = self.defaults.join(&child);
                        let sub_c = walk::open_subdir(cur, name, &c, &shown_c)?;
                        let sub_d = walk::open_subdir(def, name, &d, &shown_d)?;
                        self.compare_dirs(&sub_c, Some(&sub_d), &child)?;
                    }
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// Record `name` (at `rel`) and, for a directory, everything below it, as `change`
    /// (its children as added).
    fn add_subtree(
        &mut self,
        dir: &Dir,
        name: &OsString,
        md: &Metadata,
        rel: &Path,
        change: Change,
    ) -> Result<()> {
        let kind = Kind::of(md);
        if kind == Kind::Special {
            self.out.skipped.push(rel.to_path_buf());
            return Ok(());
        }
        self.push(rel, md, change);
        if kind == Kind::Dir {
            let sub = walk::open_subdir(dir, name, md, &self.etc.join(rel))?;
            self.compare_dirs(&sub, None, rel)?;
        }
        Ok(())
    }

    fn push(&mut self, rel: &Path, md: &Metadata, change: Change) {
        let kind = Kind::of(md);
        let size = if kind == Kind::File { md.len() } else { 0 };
        if kind == Kind::File && self.inodes.insert((md.dev(), md.ino())) {
            self.out.bytes = self.out.bytes.saturating_add(size);
        }
        self.out.entries.push(EtcEntry {
            path: rel.to_path_buf(),
            kind,
            change,
            size,
        });
    }

    /// What differs between `name` in `cur` and in `def` (same name, `lstat`s `c` and `d`);
    /// `None` if nothing does.
    fn differs(
        &self,
        cur: &Dir,
        def: &Dir,
        name: &OsString,
        c: &Metadata,
        d: &Metadata,
        rel: &Path,
    ) -> Result<Option<&'static str>> {
        let (ck, dk) = (Kind::of(c), Kind::of(d));
        if ck != dk {
            return Ok(Some("kind"));
        }
        if (c.uid(), c.gid()) != (d.uid(), d.gid()) {
            return Ok(Some("owner"));
        }
        // A symlink's permission bits mean nothing on Linux.
        if ck != Kind::Symlink && c.mode() & 0o7777 != d.mode() & 0o7777 {
            return Ok(Some("mode"));
        }
        let (shown_c, shown_d) = (self.etc.join(rel), self.defaults.join(rel));
        match ck {
            Kind::File => {
                if !walk::same_contents((cur, name, c, &shown_c), (def, name, d, &shown_d))? {
                    return Ok(Some("content"));
                }
            }
            Kind::Symlink => {
                if walk::link_target(cur, name, &shown_c)?
                    != walk::link_target(def, name, &shown_d)?
                {
                    return Ok(Some("target"));
                }
            }
            Kind::Dir | Kind::Special => {}
        }
        if walk::xattrs(cur, name, &shown_c)? != walk::xattrs(def, name, &shown_d)? {
            return Ok(Some("xattrs"));
        }
        Ok(None)
    }
}

/// Warnings for `fstab`/`crypttab` entries in the seed that name the seed's own disks.
fn disk_identity_warnings(etc: &Dir, entries: &[EtcEntry]) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["fstab", "crypttab"] {
        let carried = entries
            .iter()
            .any(|e| e.path == Path::new(file) && e.kind == Kind::File);
        if !carried {
            continue;
        }
        let Ok(text) = etc.read_to_string(file) else {
            continue;
        };
        let bound: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter(|l| {
                [
                    "UUID=",
                    "PARTUUID=",
                    "/dev/disk/by-uuid/",
                    "/dev/disk/by-partuuid/",
                    "/dev/disk/by-id/",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect();
        if !bound.is_empty() {
            out.push(format!(
                "/etc/{file} goes into the seed and names disks of the seed host ({}); targets \
                 whose disks differ will not find them — name filesystems by label instead",
                bound.join("; ")
            ));
        }
    }
    out
}
