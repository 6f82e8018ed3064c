//! [`TarBuilder`]: deterministic tar writing from cap-std directories and synthesized entries,
//! recording where every regular file's data lies in the stream.
//!
//! Output format: POSIX pax (ustar headers plus PAX extended headers where needed, see the
//! private `archive::header` module). The archive ends with the two zero blocks POSIX requires
//! and no further padding (a 10 KiB tape record is meaningless for a blob).
//!
//! Determinism: entries come in the order they are appended, trees in sorted order
//! ([`walk`](super::walk())), and a header depends only on the entry's name, type, size, owner,
//! mode, mtime and xattrs — never on when, where or by whom the archive was written. Hard links
//! are detected by (device, inode) among the regular files appended to the same builder; the
//! first name carries the data, later names are link entries to it.
//!
//! Errors: after an error the output holds a partial archive and must be discarded (write layers
//! to a temporary file, as [`LayerWriter`](crate::oci::layout::LayerWriter) does).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use cap_std::fs::Dir;

use super::header::{self, BLOCK};
use super::meta::{EntryKind, Meta};
use super::sys::{self, Stat};
use super::walk::{self, FileKind, Source, WalkEntry, WalkOptions};

/// What to do with device nodes and fifos found in a tree. Sockets are always skipped (tar cannot
/// carry them) and listed in [`TarBuilder::skipped`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpecialFiles {
    /// Fail, naming the file (the default: a seed has no business carrying device nodes).
    #[default]
    Reject,
    /// Leave them out and list them in [`TarBuilder::skipped`].
    Skip,
    /// Archive them.
    Archive,
}

/// How a [`TarBuilder`] treats what it finds on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    pub special_files: SpecialFiles,
    /// Walk options for [`TarBuilder::append_tree`].
    pub walk: WalkOptions,
}

/// Where one regular file's data lies in the uncompressed tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Archive path of the entry.
    pub path: PathBuf,
    /// Byte offset of the first data byte from the start of the stream.
    pub offset: u64,
    pub size: u64,
}

/// Writes a tar stream to `W`; see the [module docs](self).
pub struct TarBuilder<W: Write> {
    out: W,
    pos: u64,
    opts: BuildOptions,
    /// (dev, ino) of multiply-linked regular files → the archive path that carries the data.
    links: HashMap<(u64, u64), PathBuf>,
    names: HashSet<PathBuf>,
    records: Vec<FileRecord>,
    skipped: Vec<PathBuf>,
}

impl<W: Write> TarBuilder<W> {
    pub fn new(out: W) -> Self {
        Self::with_options(out, BuildOptions::default())
    }

    pub fn with_options(out: W, opts: BuildOptions) -> Self {
        TarBuilder {
            out,
            pos: 0,
            opts,
            links: HashMap::new(),
            names: HashSet::new(),
            records: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The data location of every regular file appended so far, in archive order.
    pub fn records(&self) -> &[FileRecord] {
        &self.records
    }

    /// Archive paths of files left out of a tree (sockets; special files with
    /// [`SpecialFiles::Skip`]).
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// Append `dir` and everything below it (not excluded by `exclude`, which sees paths relative
    /// to `dir`), in sorted order, under the archive path `name`. With an empty `name` the
    /// directory itself has no entry and its contents are at the top of the archive.
    pub fn append_tree(
        &mut self,
        dir: &Dir,
        name: &Path,
        mut exclude: impl FnMut(&WalkEntry<'_>) -> bool,
    ) -> Result<()> {
        let base = archive_path(name, true)?;
        let walk_opts = self.opts.walk;
        walk::walk(dir, &walk_opts, &mut exclude, &mut |entry| {
            if entry.path().as_os_str().is_empty() && base.as_os_str().is_empty() {
                return Ok(());
            }
            let archived = base.join(entry.path());
            self.append_source(entry.source, entry.stat, &archived)
        })
        .with_context(|| format!("archiving the tree {}", name.display()))
    }

    /// Append one file, directory, symlink or special file: `path` relative to `dir` (resolved
    /// without following any symlink; empty or `.` for `dir` itself), archived as `name`.
    /// Directories are appended without their contents.
    pub fn append_path(&mut self, dir: &Dir, path: &Path, name: &Path) -> Result<()> {
        let archived = archive_path(name, false)?;
        let rel = archive_path(path, true)?;
        let mut comps: Vec<&OsStr> = rel.iter().collect();
        let Some(leaf) = comps.pop() else {
            let md = dir.dir_metadata().context("reading directory metadata")?;
            return self.append_source(Source::Root(dir), Stat::from(&md), &archived);
        };
        let mut parent: Option<Dir> = None;
        for comp in comps {
            let cur = parent.as_ref().unwrap_or(dir);
            let next = sys::open_dir_nofollow(cur, comp).with_context(|| {
                format!(
                    "opening {} without following symlinks (in {})",
                    comp.to_string_lossy(),
                    path.display()
                )
            })?;
            parent = Some(next);
        }
        let parent = parent.as_ref().unwrap_or(dir);
        let stat = sys::lstat(parent, leaf)
            .with_context(|| format!("stat {}", path.display()))?
            .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
        self.append_source(Source::Child { parent, name: leaf }, stat, &archived)
    }

    /// Append a regular file with `size` bytes read from `data`; returns where the data lies.
    pub fn append_file_data(
        &mut self,
        name: &Path,
        meta: &Meta,
        size: u64,
        data: impl Read,
    ) -> Result<FileRecord> {
        let name = archive_path(name, false)?;
        self.claim(&name)?;
        self.write_file(&name, meta, size, data)
    }

    /// Append a regular file holding `data`.
    pub fn append_bytes(&mut self, name: &Path, meta: &Meta, data: &[u8]) -> Result<FileRecord> {
        self.append_file_data(name, meta, data.len() as u64, data)
    }

    /// Append a directory entry (its contents are separate entries).
    pub fn append_dir(&mut self, name: &Path, meta: &Meta) -> Result<()> {
        let name = archive_path(name, false)?;
        self.claim(&name)?;
        self.write_header(&name, &EntryKind::Dir, meta, 0)
    }

    /// Append a symlink to `target` (any text; never interpreted).
    pub fn append_symlink(&mut self, name: &Path, target: &Path, meta: &Meta) -> Result<()> {
        let name = archive_path(name, false)?;
        self.claim(&name)?;
        let kind = EntryKind::Symlink {
            target: target.to_path_buf(),
        };
        self.write_header(&name, &kind, meta, 0)
    }

    /// Write the end-of-archive marker and return the writer and the file records.
    pub fn finish(mut self) -> Result<(W, Vec<FileRecord>)> {
        self.write_all(&[0u8; 2 * BLOCK as usize])
            .context("writing the end of the archive")?;
        self.out.flush().context("flushing the archive")?;
        Ok((self.out, self.records))
    }

    fn claim(&mut self, name: &Path) -> Result<()> {
        if !self.names.insert(name.to_path_buf()) {
            bail!("{} is already in the archive", name.display());
        }
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn write_header(
        &mut self,
        name: &Path,
        kind: &EntryKind,
        meta: &Meta,
        size: u64,
    ) -> Result<()> {
        let bytes = header::encode(name.as_os_str().as_encoded_bytes(), kind, meta, size)
            .with_context(|| format!("encoding the header of {}", name.display()))?;
        self.write_all(&bytes)
            .with_context(|| format!("writing the header of {}", name.display()))
    }

    fn write_file(
        &mut self,
        name: &Path,
        meta: &Meta,
        size: u64,
        data: impl Read,
    ) -> Result<FileRecord> {
        self.write_header(name, &EntryKind::File, meta, size)?;
        let offset = self.pos;
        let mut limited = data.take(size);
        let copied = io::copy(&mut limited, &mut CountingOut(self))
            .with_context(|| format!("writing the data of {}", name.display()))?;
        if copied != size {
            bail!(
                "{}: got {copied} bytes of data, expected {size} (did the file shrink while \
                 being archived?)",
                name.display()
            );
        }
        let mut rest = limited.into_inner();
        let mut probe = [0u8; 1];
        if rest.read(&mut probe).unwrap_or(0) != 0 {
            bail!(
                "{}: more than {size} bytes of data (did the file grow while being archived?)",
                name.display()
            );
        }
        self.write_all(&vec![0u8; header::padding(size) as usize])
            .with_context(|| format!("writing the data of {}", name.display()))?;
        let record = FileRecord {
            path: name.to_path_buf(),
            offset,
            size,
        };
        self.records.push(record.clone());
        Ok(record)
    }

    fn append_source(&mut self, source: Source<'_>, stat: Stat, name: &Path) -> Result<()> {
        let kind = FileKind::of(stat.mode);
        let shown = name.display();
        match kind {
            FileKind::Socket => {
                self.skipped.push(name.to_path_buf());
                return Ok(());
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
                match self.opts.special_files {
                    SpecialFiles::Archive => {}
                    SpecialFiles::Skip => {
                        self.skipped.push(name.to_path_buf());
                        return Ok(());
                    }
                    SpecialFiles::Reject => bail!(
                        "{shown} is a device node or fifo; not archived unless \
                         BuildOptions::special_files allows it"
                    ),
                }
            }
            _ => {}
        }
        self.claim(name)?;
        match (kind, source) {
            (FileKind::File, Source::Child { parent, name: leaf }) => {
                let file = sys::open_read_nofollow(parent, leaf)
                    .with_context(|| format!("opening {shown}"))?;
                let md = file.metadata().with_context(|| format!("stat {shown}"))?;
                let st = Stat::from(&md);
                if FileKind::of(st.mode) != FileKind::File || st.ino != stat.ino {
                    bail!("{shown} changed while being archived");
                }
                let xattrs =
                    sys::fd_xattrs(&file).with_context(|| format!("reading xattrs of {shown}"))?;
                let meta = st.meta(xattrs);
                if st.nlink > 1 {
                    if let Some(first) = self.links.get(&(st.dev, st.ino)) {
                        let link = EntryKind::Hardlink {
                            target: first.clone(),
                        };
                        return self.write_header(name, &link, &meta, 0);
                    }
                    self.links.insert((st.dev, st.ino), name.to_path_buf());
                }
                self.write_file(name, &meta, st.size, std::io::BufReader::new(file))?;
                Ok(())
            }
            (FileKind::Dir, Source::Root(dir)) => {
                let xattrs = sys::reopen_dir(dir)
                    .and_then(|d| sys::fd_xattrs(&d))
                    .with_context(|| format!("reading xattrs of {shown}"))?;
                self.write_header(name, &EntryKind::Dir, &stat.meta(xattrs), 0)
            }
            (_, Source::Child { parent, name: leaf }) => {
                let xattrs = sys::name_xattrs(parent, leaf)
                    .with_context(|| format!("reading xattrs of {shown}"))?;
                let meta = stat.meta(xattrs);
                let (major, minor) = sys::split_dev(stat.rdev);
                let entry = match kind {
                    FileKind::Dir => EntryKind::Dir,
                    FileKind::Symlink => EntryKind::Symlink {
                        target: sys::readlink(parent, leaf)
                            .with_context(|| format!("reading symlink {shown}"))?,
                    },
                    FileKind::CharDevice => EntryKind::CharDevice { major, minor },
                    FileKind::BlockDevice => EntryKind::BlockDevice { major, minor },
                    FileKind::Fifo => EntryKind::Fifo,
                    FileKind::File | FileKind::Socket => {
                        bail!("{shown}: unexpected file type")
                    }
                };
                self.write_header(name, &entry, &meta, 0)
            }
            (_, Source::Root(_)) => bail!("{shown}: the root of a walk must be a directory"),
        }
    }
}

/// Counts the data bytes written through the builder.
struct CountingOut<'a, W: Write>(&'a mut TarBuilder<W>);

impl<W: Write> Write for CountingOut<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.out.write(buf)?;
        self.0.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

/// Normalise an archive path: relative, `/`-separated, no `.`/`..`/empty components, no NUL.
/// `allow_empty` accepts `""`/`"."` (the root).
fn archive_path(name: &Path, allow_empty: bool) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for comp in name.components() {
        match comp {
            Component::Normal(c) if !c.as_encoded_bytes().contains(&0) => out.push(c),
            Component::CurDir => {}
            _ => bail!(
                "{:?} is not a relative archive path without `..`",
                name.display()
            ),
        }
    }
    if out.as_os_str().is_empty() && !allow_empty {
        bail!("empty archive path");
    }
    Ok(out)
}
