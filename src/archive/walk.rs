//! Deterministic walk of a directory tree through cap-std handles.
//!
//! Children are visited in byte order of their names, a directory before its contents, so the
//! same tree always gives the same sequence (and so the same archive). Symlinks are reported,
//! never followed; subdirectories are opened with `O_NOFOLLOW`, so a directory swapped for a
//! symlink during the walk is an error, not an escape. The caller's exclusion predicate decides
//! what to leave out (e.g. everything under `/var/tmp`); excluding a directory prunes its subtree.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cap_std::fs::Dir;

use super::sys::{self, Stat};

/// What kind of file a walk entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileKind {
    pub(crate) fn of(mode: u32) -> FileKind {
        match mode & sys::S_IFMT {
            sys::S_IFREG => FileKind::File,
            sys::S_IFDIR => FileKind::Dir,
            sys::S_IFLNK => FileKind::Symlink,
            sys::S_IFCHR => FileKind::CharDevice,
            sys::S_IFBLK => FileKind::BlockDevice,
            sys::S_IFIFO => FileKind::Fifo,
            _ => FileKind::Socket,
        }
    }
}

/// Walk options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Do not descend into directories on another filesystem than the root (mount points are
    /// still reported, as empty directories).
    pub one_file_system: bool,
}

/// Where an entry lives: the walk's root itself, or a name in an open parent directory.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Root(&'a Dir),
    Child { parent: &'a Dir, name: &'a OsStr },
}

/// One file found by [`walk`].
pub struct WalkEntry<'a> {
    path: &'a Path,
    pub(crate) source: Source<'a>,
    pub(crate) stat: Stat,
}

impl WalkEntry<'_> {
    /// Path relative to the walk's root (empty for the root itself).
    pub fn path(&self) -> &Path {
        self.path
    }

    pub fn kind(&self) -> FileKind {
        FileKind::of(self.stat.mode)
    }

    /// Size in bytes (meaningful for regular files).
    pub fn size(&self) -> u64 {
        self.stat.size
    }

    /// Permission bits including setuid/setgid/sticky.
    pub fn mode(&self) -> u32 {
        self.stat.mode & 0o7777
    }
}

/// Visit `root` and everything below it, sorted, parents first. `exclude` is asked about every
/// entry below the root (never the root); `visit` is called for the root and every entry not
/// excluded. Entries that vanish during the walk are skipped.
pub fn walk(
    root: &Dir,
    opts: &WalkOptions,
    exclude: &mut dyn FnMut(&WalkEntry<'_>) -> bool,
    visit: &mut dyn FnMut(&WalkEntry<'_>) -> Result<()>,
) -> Result<()> {
    let md = root
        .dir_metadata()
        .context("reading the metadata of the walk's root")?;
    let stat = Stat::from(&md);
    let entry = WalkEntry {
        path: Path::new(""),
        source: Source::Root(root),
        stat,
    };
    visit(&entry)?;
    let mut path = PathBuf::new();
    walk_dir(root, stat.dev, opts, &mut path, exclude, visit)
}

fn walk_dir(
    dir: &Dir,
    root_dev: u64,
    opts: &WalkOptions,
    path: &mut PathBuf,
    exclude: &mut dyn FnMut(&WalkEntry<'_>) -> bool,
    visit: &mut dyn FnMut(&WalkEntry<'_>) -> Result<()>,
) -> Result<()> {
    let shown = || {
        if path.as_os_str().is_empty() {
            ".".to_string()
        } else {
            path.display().to_string()
        }
    };
    let mut names: Vec<OsString> = dir
        .entries()
        .with_context(|| format!("listing {}", shown()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("listing {}", shown()))?;
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    for name in names {
        path.push(&name);
        let result = (|| -> Result<()> {
            let Some(stat) =
                sys::lstat(dir, &name).with_context(|| format!("stat {}", path.display()))?
            else {
                return Ok(());
            };
            let entry = WalkEntry {
                path: path.as_path(),
                source: Source::Child {
                    parent: dir,
                    name: &name,
                },
                stat,
            };
            if exclude(&entry) {
                return Ok(());
            }
            visit(&entry)?;
            if entry.kind() != FileKind::Dir || (opts.one_file_system && stat.dev != root_dev) {
                return Ok(());
            }
            let sub = match sys::open_dir_nofollow(dir, &name) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(e).with_context(|| format!("opening directory {}", path.display()));
                }
            };
            let mut sub_path = path.clone();
            walk_dir(&sub, root_dev, opts, &mut sub_path, exclude, visit)
        })();
        path.pop();
        result?;
    }
    Ok(())
}
