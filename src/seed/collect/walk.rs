//! Reading a tree through directory handles, never following a symlink.
//!
//! The seed's `/etc` and `/var` are walked with [`cap_std::fs::Dir`] handles: every lookup is
//! relative to an open directory and cannot leave it, so a symlink in the seed (`/etc/mtab ->
//! ../proc/self/mounts`, an absolute link into `/run`) is recorded as a symlink and never
//! resolved against the machine ibu runs on. Each name is `lstat`ed; a directory is opened only
//! after that, and the opened handle is checked to be the inode that was `lstat`ed, so a
//! directory swapped for a symlink in between is an error rather than a walk somewhere else.
//!
//! Extended attributes are read with `llistxattr`/`lgetxattr` on
//! `/proc/self/fd/<directory handle>/<name>`: the directory is named by its handle, and the `l`
//! calls do not follow the final name, which is how xattrs of a symlink can be read at all
//! without a path from `/` (the same technique libostree uses).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::{Dir, Metadata, MetadataExt};

/// The kinds of entries a seed archives, and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Sockets, FIFOs, device nodes: runtime objects, never archived.
    Special,
}

impl Kind {
    pub fn of(md: &Metadata) -> Kind {
        let t = md.file_type();
        if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else if t.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Special
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Special => "special file",
        }
    }
}

/// Open a tree root given by path (the only place a path from `/` is resolved).
pub fn open_root(path: &Path) -> Result<Dir> {
    Dir::open_ambient_dir(path, cap_std::ambient_authority())
        .with_context(|| format!("opening directory {}", path.display()))
}

/// The entries of `dir` with their `lstat`, sorted by name. An entry that vanishes between
/// listing and `lstat` (a live host removing a temporary file) is left out.
pub fn list(dir: &Dir, shown: &Path) -> Result<Vec<(OsString, Metadata)>> {
    let mut out = Vec::new();
    for entry in dir
        .entries()
        .with_context(|| format!("listing {}", shown.display()))?
    {
        let entry = entry.with_context(|| format!("listing {}", shown.display()))?;
        let name = entry.file_name();
        let md = match dir.symlink_metadata(&name) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %shown.join(&name).display(), "vanished while listing");
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("lstat {}", shown.join(&name).display()));
            }
        };
        out.push((name, md));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Open the directory `name` of `dir` whose `lstat` is `md`, checking it is that very inode.
pub fn open_subdir(dir: &Dir, name: &OsStr, md: &Metadata, shown: &Path) -> Result<Dir> {
    let sub = dir
        .open_dir(name)
        .with_context(|| format!("opening directory {}", shown.display()))?;
    let opened = sub
        .dir_metadata()
        .with_context(|| format!("fstat {}", shown.display()))?;
    if (opened.dev(), opened.ino()) != (md.dev(), md.ino()) {
        bail!(
            "{} changed while it was being read (it is no longer the directory that was listed)",
            shown.display()
        );
    }
    Ok(sub)
}

/// The target of the symlink `name` in `dir`, as stored (never resolved).
pub fn link_target(dir: &Dir, name: &OsStr, shown: &Path) -> Result<PathBuf> {
    dir.read_link_contents(name)
        .with_context(|| format!("reading symlink {}", shown.display()))
}

/// Whether the regular files `a_name` in `a` and `b_name` in `b` (both `lstat`ed as regular
/// files of `a_md.len()` bytes) have the same bytes.
pub fn same_contents(
    (a, a_name, a_md, a_shown): (&Dir, &OsStr, &Metadata, &Path),
    (b, b_name, b_md, b_shown): (&Dir, &OsStr, &Metadata, &Path),
) -> Result<bool> {
    if a_md.len() != b_md.len() {
        return Ok(false);
    }
    if (a_md.dev(), a_md.ino()) == (b_md.dev(), b_md.ino()) {
        return Ok(true);
    }
    let mut fa = open_file(a, a_name, a_md, a_shown)?;
    let mut fb = open_file(b, b_name, b_md, b_shown)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba)
            .with_context(|| format!("reading {}", a_shown.display()))?;
        let nb = read_full(&mut fb, &mut bb)
            .with_context(|| format!("reading {}", b_shown.display()))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn open_file(dir: &Dir, name: &OsStr, md: &Metadata, shown: &Path) -> Result<cap_std::fs::File> {
    let f = dir
        .open(name)
        .with_context(|| format!("opening {}", shown.display()))?;
    let opened = f
        .metadata()
        .with_context(|| format!("fstat {}", shown.display()))?;
    if (opened.dev(), opened.ino()) != (md.dev(), md.ino()) {
        bail!(
            "{} changed while it was being read (it is no longer the file that was listed)",
            shown.display()
        );
    }
    Ok(f)
}

/// Read until `buf` is full or the end of the file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Extended attributes of `name` in `dir` (not following a symlink), by name.
pub fn xattrs(dir: &Dir, name: &OsStr, shown: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut p = OsString::from(format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()));
    p.push(name);
    let p = PathBuf::from(p);
    let what = || format!("extended attributes of {}", shown.display());
    let names = loop {
        let n = match rustix::fs::llistxattr_query(&p) {
            Ok(n) => n,
            // Filesystems without xattr support have none.
            Err(rustix::io::Errno::NOTSUP) => return Ok(BTreeMap::new()),
            Err(e) => return Err(std::io::Error::from(e)).with_context(what),
        };
        if n == 0 {
            return Ok(BTreeMap::new());
        }
        let mut buf = vec![0u8; n];
        match rustix::fs::llistxattr(&p, &mut buf) {
            Ok(got) => {
                buf.truncate(got);
                break buf;
            }
            // Grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(std::io::Error::from(e)).with_context(what),
        }
    };
    let mut out = BTreeMap::new();
    for key in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key_os = OsStr::from_bytes(key);
        let value = loop {
            let n = match rustix::fs::lgetxattr_query(&p, key_os) {
                Ok(n) => n,
                // Removed between listing and reading.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(std::io::Error::from(e)).with_context(what),
            };
            let mut buf = vec![0u8; n];
            if n == 0 {
                break Some(buf);
            }
            match rustix::fs::lgetxattr(&p, key_os, &mut buf) {
                Ok(got) => {
                    buf.truncate(got);
                    break Some(buf);
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(std::io::Error::from(e)).with_context(what),
            }
        };
        if let Some(v) = value {
            out.insert(key.to_vec(), v);
        }
    }
    Ok(out)
}
