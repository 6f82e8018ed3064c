//! The `*at` operations the restore needs, on **one path component** relative to an open
//! directory handle, never following a symlink: `lstat`, opening a directory with `O_NOFOLLOW`,
//! the three kinds of rename, recursive removal, and reading and applying a directory's
//! metadata through its handle.
//!
//! Like `archive::sys` (private to the archive module), nothing here resolves a path of more
//! than one component, so nothing can be redirected by a symlink in the tree it works on.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, Timespec, Timestamps, XattrFlags};

/// What kind of entry a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    /// Device node, fifo, socket.
    Other,
}

impl Kind {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Other => "special file",
        }
    }
}

/// The parts of a `stat` the restore uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Node {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
}

fn node(st: &rustix::fs::Stat) -> Node {
    use rustix::fs::FileType as T;
    let kind = match T::from_raw_mode(st.st_mode) {
        T::Directory => Kind::Dir,
        T::RegularFile => Kind::File,
        T::Symlink => Kind::Symlink,
        _ => Kind::Other,
    };
    Node {
        kind,
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

/// Refuse anything that is not a single, real path component.
pub(super) fn check(name: &OsStr) -> io::Result<()> {
    let b = name.as_encoded_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    Ok(())
}

/// `lstat` of `name` in `dir`; `None` if nothing has that name.
pub(super) fn lstat(dir: &Dir, name: &OsStr) -> io::Result<Option<Node>> {
    check(name)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(node(&st))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat` of an open handle.
pub(super) fn fstat(fd: &impl AsFd) -> io::Result<Node> {
    Ok(node(&rustix::fs::fstat(fd)?))
}

/// Open the directory `name` of `dir`, failing (`ELOOP`/`ENOTDIR`) on anything else, a symlink
/// to a directory included. The handle is a real descriptor: `fchmod`, `fsetxattr` work on it.
pub(super) fn open_dir(dir: &Dir, name: &OsStr) -> io::Result<Dir> {
    check(name)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

/// A directory named by a path the caller trusts (the stateroot, the deployment), as a real
/// descriptor.
pub(super) fn open_path(path: &std::path::Path) -> Result<Dir> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening directory {}", path.display()))?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

/// Names in `dir`, sorted (so a run always takes its steps in the same order).
pub(super) fn names(dir: &Dir) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for entry in dir.entries()? {
        out.push(entry?.file_name());
    }
    out.sort();
    Ok(out)
}

/// `renameat2(from_dir/from, to_dir/to, flags)`.
pub(super) fn rename(
    from_dir: &Dir,
    from: &OsStr,
    to_dir: &Dir,
    to: &OsStr,
    flags: RenameFlags,
) -> io::Result<()> {
    check(from)?;
    check(to)?;
    rustix::fs::renameat_with(from_dir, from, to_dir, to, flags).map_err(Into::into)
}

/// Remove `name` from `dir`: a directory with everything in it, anything else (a symlink
/// included) by unlinking the name. Never follows a symlink; does nothing if `name` is absent.
pub(super) fn remove_tree(dir: &Dir, name: &OsStr) -> io::Result<()> {
    match lstat(dir, name)? {
        None => Ok(()),
        Some(n) if n.kind == Kind::Dir => {
            let sub = open_dir(dir, name)?;
            for child in names(&sub)? {
                remove_tree(&sub, &child)?;
            }
            drop(sub);
            ignore_absent(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR))
        }
        Some(_) => ignore_absent(rustix::fs::unlinkat(dir, name, AtFlags::empty())),
    }
}

fn ignore_absent(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `fsync` a directory (its renames and unlinks become durable).
pub(super) fn sync_dir(dir: &Dir) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fsync(fd).map_err(Into::into)
}

/// Create `name` in `dir` for reading and writing; fails if anything has that name.
pub(super) fn create_new(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<std::fs::File> {
    check(name)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    Ok(std::fs::File::from(fd))
}

/// Read a small regular file `name` of `dir` (at most `max` bytes), not following a symlink;
/// `None` if it does not exist.
pub(super) fn read_small(dir: &Dir, name: &OsStr, max: u64) -> io::Result<Option<Vec<u8>>> {
    check(name)?;
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    if fstat(&file)?.kind != Kind::File {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name:?} is not a regular file"),
        ));
    }
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name:?} is larger than {max} bytes"),
        ));
    }
    Ok(Some(out))
}

/// Atomically replace `name` in `dir` with `bytes` (temporary file, `fsync`, rename, `fsync` of
/// the directory).
pub(super) fn write_atomic(dir: &Dir, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!(".{name}.tmp");
    remove_tree(dir, OsStr::new(&tmp))?;
    let mut f = create_new(dir, OsStr::new(&tmp), 0o600)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    rename(
        dir,
        OsStr::new(&tmp),
        dir,
        OsStr::new(name),
        RenameFlags::empty(),
    )?;
    sync_dir(dir)
}

/// A directory's metadata, read through its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timespec,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Kept on the destination when the source has none: the kernel (the LSM) owns it.
const SELINUX: &str = "security.selinux";

fn unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::OPNOTSUPP
}

fn xattrs(fd: &impl AsFd) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let list = loop {
        let len = match rustix::fs::flistxattr_query(fd) {
            Ok(len) => len,
            Err(e) if unsupported(e) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; len];
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            // The list grew in between.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "an xattr name is not UTF-8")
        })?;
        let value = loop {
            let len = match rustix::fs::fgetxattr_query(fd, name.as_str()) {
                Ok(len) => len,
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            };
            let mut buf = vec![0u8; len];
            match rustix::fs::fgetxattr(fd, name.as_str(), &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    break Some(buf);
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(v) = value {
            out.insert(name, v);
        }
    }
    Ok(out)
}

/// Mode, owner, mtime and xattrs of an open directory.
pub(super) fn dir_meta(dir: &Dir) -> io::Result<DirMeta> {
    let st = rustix::fs::fstat(dir)?;
    Ok(DirMeta {
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
        xattrs: xattrs(dir)?,
    })
}

/// Give an open directory `meta`, in the order the kernel needs: owner, mode, xattrs (ACLs after
/// the mode; xattrs the source lacks are removed, except the SELinux label), mtime (atime set to
/// it, as extraction does). Owner and xattrs only when asked (when running as root).
pub(super) fn apply_dir_meta(
    dir: &Dir,
    meta: &DirMeta,
    owner: bool,
    with_xattrs: bool,
) -> io::Result<()> {
    if owner {
        rustix::fs::fchown(
            dir,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
        )?;
    }
    rustix::fs::fchmod(dir, Mode::from_raw_mode(meta.mode))?;
    if with_xattrs {
        let current = xattrs(dir)?;
        for name in current.keys() {
            if !meta.xattrs.contains_key(name) && name != SELINUX {
                match rustix::fs::fremovexattr(dir, name.as_str()) {
                    Ok(()) | Err(rustix::io::Errno::NODATA) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for (name, value) in &meta.xattrs {
            if current.get(name) != Some(value) {
                rustix::fs::fsetxattr(dir, name.as_str(), value, XattrFlags::empty())?;
            }
        }
    }
    rustix::fs::futimens(
        dir,
        &Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        },
    )
    .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_tree_never_follows_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("sub/keep"), "keep").unwrap();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "f").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("top-link")).unwrap();
        let dir = open_path(tmp.path()).unwrap();
        let t = open_dir(&dir, OsStr::new("tree")).unwrap();
        remove_tree(&t, OsStr::new("top-link")).unwrap();
        assert!(outside.join("sub/keep").exists());
        remove_tree(&dir, OsStr::new("tree")).unwrap();
        assert!(!tree.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("sub/keep")).unwrap(),
            "keep"
        );
        // Absent is fine; a multi-component name is refused.
        remove_tree(&dir, OsStr::new("tree")).unwrap();
        assert!(remove_tree(&dir, OsStr::new("outside/sub")).is_err());
        assert!(outside.join("sub/keep").exists());
        // open_dir refuses a symlink to a directory.
        std::os::unix::fs::symlink(&outside, tmp.path().join("l")).unwrap();
        assert!(open_dir(&dir, OsStr::new("l")).is_err());
    }

    #[test]
    fn directory_metadata_round_trips_and_extra_xattrs_go() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["from", "to"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let dir = open_path(tmp.path()).unwrap();
        let from = open_dir(&dir, OsStr::new("from")).unwrap();
        let to = open_dir(&dir, OsStr::new("to")).unwrap();
        rustix::fs::fchmod(&from, Mode::from_raw_mode(0o2750)).unwrap();
        rustix::fs::fsetxattr(&from, "user.a", b"1\n\0", XattrFlags::empty()).unwrap();
        rustix::fs::fsetxattr(&to, "user.extra", b"x", XattrFlags::empty()).unwrap();
        let t = Timespec {
            tv_sec: 1_234_567_890,
            tv_nsec: 5,
        };
        rustix::fs::futimens(
            &from,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )
        .unwrap();
        let meta = dir_meta(&from).unwrap();
        apply_dir_meta(&to, &meta, rustix::process::geteuid().is_root(), true).unwrap();
        assert_eq!(dir_meta(&to).unwrap(), meta);
        assert!(!xattrs(&to).unwrap().contains_key("user.extra"));
    }
}
