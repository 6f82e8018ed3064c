//! Applying planned entries to the destination: resolving parents without following symlinks,
//! the last checks that need the filesystem (what exists already, hardlink targets), then
//! creating the entry and setting its metadata.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use cap_std::fs::Dir;

use super::plan::{Planned, shown};
use super::{ExtractOptions, ExtractReport, Reason, os, reject};
use crate::archive::meta::{EntryKind, Meta};
use crate::archive::sys;

pub(crate) struct State<'a> {
    dest: &'a Dir,
    opts: &'a ExtractOptions,
    /// Every path extracted so far → whether it is a directory.
    seen: HashMap<PathBuf, bool>,
    /// Directories whose metadata is applied at the end.
    deferred: Vec<(PathBuf, Meta)>,
    /// The last parent directory used, by relative path (most entries share their parent with the
    /// previous one). Directories are never removed or renamed during extraction, so a handle
    /// opened without following symlinks stays the right directory.
    cache: Option<(PathBuf, Dir)>,
    pub report: ExtractReport,
}

/// Parent directories of an entry that exist: a handle to the deepest (`None`: the
/// destination) and how many components it covers.
struct Found {
    dir: Option<Dir>,
    depth: usize,
}

impl<'a> State<'a> {
    pub fn new(dest: &'a Dir, opts: &'a ExtractOptions) -> Self {
        State {
            dest,
            opts,
            seen: HashMap::new(),
            deferred: Vec::new(),
            cache: None,
            report: ExtractReport::default(),
        }
    }

    /// Follow `comps` from the destination as far as they exist, rejecting a symlink or
    /// non-directory on the way. Writes nothing.
    fn find(&self, entry: &[u8], comps: &[&OsStr]) -> Result<Found> {
        let mut dir: Option<Dir> = None;
        for (i, comp) in comps.iter().enumerate() {
            let cur = dir.as_ref().unwrap_or(self.dest);
            let here = || os(comps[..=i].iter().collect::<PathBuf>().as_os_str());
            let st = sys::lstat(cur, comp).with_context(|| format!("stat {}", here()))?;
            match st.map(|s| s.file_type()) {
                None => return Ok(Found { dir, depth: i }),
                Some(sys::S_IFDIR) => {}
                Some(sys::S_IFLNK) => {
                    return Err(reject(entry, Reason::ThroughSymlink { component: here() }));
                }
                Some(_) => {
                    return Err(reject(entry, Reason::NotADirectory { component: here() }));
                }
            }
            let next = sys::open_dir_nofollow(cur, comp).map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    reject(entry, Reason::ThroughSymlink { component: here() })
                } else {
                    anyhow!(e).context(format!("opening directory {}", here()))
                }
            })?;
            dir = Some(next);
        }
        Ok(Found {
            dir,
            depth: comps.len(),
        })
    }

    fn parent_of(&mut self, entry: &[u8], parents: &[&OsStr]) -> Result<Found> {
        if let Some((path, dir)) = &self.cache
            && path.iter().eq(parents.iter().copied())
        {
            return Ok(Found {
                dir: Some(dir.try_clone().context("duplicating a directory handle")?),
                depth: parents.len(),
            });
        }
        self.find(entry, parents)
    }

    /// Extract one planned entry whose data is `data`.
    pub fn apply(&mut self, entry: &[u8], p: Planned, data: &mut impl Read) -> Result<()> {
        if self.seen.contains_key(&p.rel) {
            return Err(reject(entry, Reason::Duplicate));
        }
        if p.rel.as_os_str().is_empty() {
            // The destination itself (plan only lets directories name it).
            self.seen.insert(p.rel.clone(), true);
            self.deferred.push((p.rel, p.meta));
            self.report.dirs += 1;
            self.report.root_metadata = true;
            return Ok(());
        }
        let comps: Vec<&OsStr> = p.rel.iter().collect();
        let (leaf, parents) = comps.split_last().ok_or_else(|| anyhow!("empty path"))?;
        let found = self.parent_of(entry, parents)?;

        // Checks that need the filesystem; still nothing written.
        let existing = if found.depth == parents.len() {
            let dir = found.dir.as_ref().unwrap_or(self.dest);
            sys::lstat(dir, leaf).with_context(|| format!("stat {}", shown(&p.rel)))?
        } else {
            None
        };
        let adopt = match existing {
            None => false,
            Some(st) if p.kind == EntryKind::Dir && st.file_type() == sys::S_IFDIR => true,
            Some(_) => return Err(reject(entry, Reason::Exists)),
        };
        let link_source = match &p.kind {
            EntryKind::Hardlink { target } => Some(self.link_source(entry, target)?),
            _ => None,
        };

        // Create missing parents.
        let mut dir = found.dir;
        for comp in &parents[found.depth..] {
            let cur = dir.as_ref().unwrap_or(self.dest);
            sys::mkdir(cur, comp, 0o755)
                .with_context(|| format!("creating directory {}", os(comp)))?;
            dir = Some(
                sys::open_dir_nofollow(cur, comp)
                    .with_context(|| format!("opening directory {}", os(comp)))?,
            );
        }
        let parent = dir.as_ref().unwrap_or(self.dest);
        self.create(&p, parent, leaf, adopt, link_source, data)?;

        if let Some(d) = dir {
            self.cache = Some((parents.iter().collect(), d));
        }
        self.seen.insert(p.rel.clone(), p.kind == EntryKind::Dir);
        if p.kind == EntryKind::Dir {
            self.deferred.push((p.rel.clone(), p.meta));
        }
        Ok(())
    }

    /// A hardlink's target: an earlier non-directory entry of this archive, resolved again
    /// without following symlinks. Returns its parent directory handle and name.
    fn link_source(&self, entry: &[u8], target: &Path) -> Result<(Option<Dir>, PathBuf)> {
        let why = |why: &str| {
            reject(
                entry,
                Reason::HardlinkTarget {
                    target: shown(target),
                    why: why.into(),
                },
            )
        };
        match self.seen.get(target) {
            None => return Err(why("not an earlier entry of this archive")),
            Some(true) => return Err(why("is a directory")),
            Some(false) => {}
        }
        let comps: Vec<&OsStr> = target.iter().collect();
        let (leaf, parents) = comps.split_last().ok_or_else(|| why("empty"))?;
        let found = self.find(entry, parents)?;
        if found.depth != parents.len() {
            return Err(why("vanished"));
        }
        Ok((found.dir, PathBuf::from(leaf)))
    }

    fn create(
        &mut self,
        p: &Planned,
        parent: &Dir,
        leaf: &OsStr,
        adopt: bool,
        link_source: Option<(Option<Dir>, PathBuf)>,
        data: &mut impl Read,
    ) -> Result<()> {
        let name = shown(&p.rel);
        match &p.kind {
            EntryKind::File => {
                let mut file = sys::create_new(parent, leaf)
                    .with_context(|| format!("creating file {name}"))?;
                let n = io::copy(data, &mut file)
                    .with_context(|| format!("writing the data of {name}"))?;
                self.report.files += 1;
                self.report.bytes += n;
                self.set_fd(&file, &p.meta, &name)?;
            }
            EntryKind::Dir => {
                if !adopt {
                    sys::mkdir(parent, leaf, 0o700)
                        .with_context(|| format!("creating directory {name}"))?;
                }
                self.report.dirs += 1;
            }
            EntryKind::Symlink { target } => {
                sys::symlink(target.as_os_str(), parent, leaf)
                    .with_context(|| format!("creating symlink {name}"))?;
                self.set_name(parent, leaf, &p.meta, true, &name)?;
                self.report.symlinks += 1;
            }
            EntryKind::Hardlink { .. } => {
                let (src_dir, src_leaf) =
                    link_source.ok_or_else(|| anyhow!("hardlink without a resolved target"))?;
                let src_dir = src_dir.as_ref().unwrap_or(self.dest);
                sys::hardlink(src_dir, src_leaf.as_os_str(), parent, leaf)
                    .with_context(|| format!("creating hardlink {name}"))?;
                self.report.hardlinks += 1;
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let ft = if matches!(p.kind, EntryKind::CharDevice { .. }) {
                    sys::S_IFCHR
                } else {
                    sys::S_IFBLK
                };
                sys::mknod(parent, leaf, ft, (*major, *minor))
                    .with_context(|| format!("creating device node {name}"))?;
                self.set_name(parent, leaf, &p.meta, false, &name)?;
                self.report.specials += 1;
            }
            EntryKind::Fifo => {
                sys::mknod(parent, leaf, sys::S_IFIFO, (0, 0))
                    .with_context(|| format!("creating fifo {name}"))?;
                self.set_name(parent, leaf, &p.meta, false, &name)?;
                self.report.specials += 1;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs, mtime of an open file or directory, in that order.
    fn set_fd(&self, fd: &impl AsFd, meta: &Meta, name: &str) -> Result<()> {
        if self.opts.preserve_owner {
            sys::fchown(fd, meta.uid, meta.gid)
                .with_context(|| format!("setting owner {}:{} of {name}", meta.uid, meta.gid))?;
        }
        sys::fchmod(fd, meta.mode)
            .with_context(|| format!("setting mode {:04o} of {name}", meta.mode))?;
        if self.opts.preserve_xattrs {
            for (k, v) in &meta.xattrs {
                sys::fd_set_xattr(fd, k, v)
                    .with_context(|| format!("setting xattr {k} of {name}"))?;
            }
        }
        sys::futimens(fd, meta.mtime).with_context(|| format!("setting mtime of {name}"))
    }

    /// The same for a symlink, device node or fifo, by name without following it.
    fn set_name(
        &self,
        dir: &Dir,
        leaf: &OsStr,
        meta: &Meta,
        symlink: bool,
        name: &str,
    ) -> Result<()> {
        if self.opts.preserve_owner {
            sys::chown_nofollow(dir, leaf, meta.uid, meta.gid)
                .with_context(|| format!("setting owner {}:{} of {name}", meta.uid, meta.gid))?;
        }
        if !symlink {
            sys::chmod_at(dir, leaf, meta.mode)
                .with_context(|| format!("setting mode {:04o} of {name}", meta.mode))?;
        }
        if self.opts.preserve_xattrs {
            for (k, v) in &meta.xattrs {
                sys::name_set_xattr(dir, leaf, k, v)
                    .with_context(|| format!("setting xattr {k} of {name}"))?;
            }
        }
        sys::utimens_nofollow(dir, leaf, meta.mtime)
            .with_context(|| format!("setting mtime of {name}"))
    }

    /// Apply the deferred directory metadata, deepest directories first.
    pub fn finish_dirs(&mut self) -> Result<()> {
        self.cache = None;
        let mut deferred = std::mem::take(&mut self.deferred);
        deferred.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.iter().count()));
        for (rel, meta) in &deferred {
            let name = shown(rel);
            let comps: Vec<&OsStr> = rel.iter().collect();
            match comps.split_last() {
                None => {
                    let dir = sys::reopen_dir(self.dest)
                        .with_context(|| format!("opening directory {name}"))?;
                    self.set_fd(&dir, meta, &name)?;
                }
                Some((leaf, parents)) => {
                    let found = self.find(rel.as_os_str().as_encoded_bytes(), parents)?;
                    if found.depth != parents.len() {
                        return Err(anyhow!("directory {name} vanished during extraction"));
                    }
                    let parent = found.dir.as_ref().unwrap_or(self.dest);
                    let dir = sys::open_dir_nofollow(parent, leaf)
                        .with_context(|| format!("opening directory {name}"))?;
                    self.set_fd(&dir, meta, &name)?;
                }
            }
        }
        Ok(())
    }
}
