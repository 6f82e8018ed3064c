//! Thin wrappers over the `*at` system calls the archive code needs and cap-std does not offer
//! (no-follow opens, xattrs, owners and times of symlinks, device nodes).
//!
//! Every function takes a directory handle and **one path component**: the kernel never
//! resolves a multi-component path or follows a symlink on ibu's behalf, so nothing here can
//! leave the directory it was handed. Functions that have no `*at` form in Linux (`lsetxattr`,
//! `llistxattr`) go through `/proc/self/fd/<dirfd>/<name>`, which resolves the directory by its
//! open handle and does not follow the final symlink.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use cap_std::fs::Dir;
use rustix::fs::{AtFlags, Mode, OFlags, XattrFlags};

use super::meta::{Meta, Mtime};

/// `st_mode` file type bits.
pub(crate) const S_IFMT: u32 = 0o170_000;
pub(crate) const S_IFREG: u32 = 0o100_000;
pub(crate) const S_IFDIR: u32 = 0o040_000;
pub(crate) const S_IFLNK: u32 = 0o120_000;
pub(crate) const S_IFCHR: u32 = 0o020_000;
pub(crate) const S_IFBLK: u32 = 0o060_000;
pub(crate) const S_IFIFO: u32 = 0o010_000;

/// The fields of a `stat` the archive code uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    pub rdev: u64,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

impl Stat {
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn meta(&self, xattrs: BTreeMap<String, Vec<u8>>) -> Meta {
        Meta {
            mode: self.mode & 0o7777,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            xattrs,
        }
    }
}

fn mtime(secs: i64, nanos: i64) -> Mtime {
    Mtime {
        secs,
        nanos: u32::try_from(nanos).unwrap_or(0),
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(md: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stat {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: mtime(md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            size: md.size(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
        }
    }
}

impl From<&cap_std::fs::Metadata> for Stat {
    fn from(md: &cap_std::fs::Metadata) -> Self {
        use cap_std::fs::MetadataExt;
        Stat {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime: mtime(md.mtime(), md.mtime_nsec()),
            rdev: md.rdev(),
            size: md.size(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
        }
    }
}

/// Refuse anything that is not a single, real path component.
pub(crate) fn check_component(name: &OsStr) -> io::Result<()> {
    let b = name.as_encoded_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single path component"),
        ));
    }
    Ok(())
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn lstat(dir: &Dir, name: &OsStr) -> io::Result<Option<Stat>> {
    check_component(name)?;
    match dir.symlink_metadata(name) {
        Ok(md) => Ok(Some(Stat::from(&md))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Open the directory `name` in `dir` without following a symlink.
pub(crate) fn open_dir_nofollow(dir: &Dir, name: &OsStr) -> io::Result<Dir> {
    check_component(name)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(Dir::from_std_file(std::fs::File::from(fd)))
}

/// A readable handle on `dir` itself. cap-std may hold directories as `O_PATH` descriptors, on
/// which `fgetxattr`, `fchmod` and friends fail with `EBADF`.
pub(crate) fn reopen_dir(dir: &Dir) -> io::Result<std::fs::File> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

/// Open `name` in `dir` for reading without following a symlink (non-blocking, so a fifo put in
/// its place cannot hang the caller, which checks the type of what it got with `fstat`).
pub(crate) fn open_read_nofollow(dir: &Dir, name: &OsStr) -> io::Result<std::fs::File> {
    check_component(name)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

/// Create `name` in `dir` for writing; fails if anything (even a dangling symlink) has that name.
pub(crate) fn create_new(dir: &Dir, name: &OsStr) -> io::Result<std::fs::File> {
    check_component(name)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

/// `/proc/self/fd/<dirfd>/<name>`: a path for the `l*xattr` calls that has no `*at` form.
fn proc_path(dir: &Dir, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
    p.push(name);
    p
}

fn split_names(list: &[u8]) -> io::Result<Vec<String>> {
    list.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| {
            String::from_utf8(n.to_vec()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("xattr name {:?} is not UTF-8", String::from_utf8_lossy(n)),
                )
            })
        })
        .collect()
}

/// Run a size-query-then-fetch xattr call, retrying if the value grew in between.
fn sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    fetch: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<u8>> {
    loop {
        let len = query()?;
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Ok(buf);
        }
        match fetch(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn unsupported(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::OPNOTSUPP
}

/// All xattrs of an open file or directory.
pub(crate) fn fd_xattrs(fd: &impl AsFd) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let list = match sized(
        || rustix::fs::flistxattr_query(fd),
        |b| rustix::fs::flistxattr(fd, b),
    ) {
        Ok(l) => l,
        Err(e) if rustix::io::Errno::from_io_error(&e).is_some_and(|e| unsupported(&e)) => {
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = BTreeMap::new();
    for name in split_names(&list)? {
        match sized(
            || rustix::fs::fgetxattr_query(fd, name.as_str()),
            |b| rustix::fs::fgetxattr(fd, name.as_str(), b),
        ) {
            Ok(v) => {
                out.insert(name, v);
            }
            // Removed between list and get.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// All xattrs of `name` in `dir`, not following a symlink.
pub(crate) fn name_xattrs(dir: &Dir, name: &OsStr) -> io::Result<BTreeMap<String, Vec<u8>>> {
    check_component(name)?;
    let path = proc_path(dir, name);
    let list = match sized(
        || rustix::fs::llistxattr_query(&path),
        |b| rustix::fs::llistxattr(&path, b),
    ) {
        Ok(l) => l,
        Err(e) if rustix::io::Errno::from_io_error(&e).is_some_and(|e| unsupported(&e)) => {
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = BTreeMap::new();
    for xname in split_names(&list)? {
        match sized(
            || rustix::fs::lgetxattr_query(&path, xname.as_str()),
            |b| rustix::fs::lgetxattr(&path, xname.as_str(), b),
        ) {
            Ok(v) => {
                out.insert(xname, v);
            }
            Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Set one xattr on an open file or directory.
pub(crate) fn fd_set_xattr(fd: &impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()).map_err(Into::into)
}

/// Set one xattr on `name` in `dir`, not following a symlink.
pub(crate) fn name_set_xattr(dir: &Dir, name: &OsStr, xname: &str, value: &[u8]) -> io::Result<()> {
    check_component(name)?;
    rustix::fs::lsetxattr(proc_path(dir, name), xname, value, XattrFlags::empty())
        .map_err(Into::into)
}

/// `fchownat(.., AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn chown_nofollow(dir: &Dir, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    check_component(name)?;
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(Into::into)
}

pub(crate) fn fchown(fd: &impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(Into::into)
}

pub(crate) fn fchmod(fd: &impl AsFd, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(Into::into)
}

/// `fchmodat` of a node ibu just created (device node or fifo: they cannot be opened safely to
/// `fchmod`); the caller has checked with [`lstat`] that it is not a symlink.
pub(crate) fn chmod_at(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<()> {
    check_component(name)?;
    rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty()).map_err(Into::into)
}

fn timestamps(t: Mtime) -> rustix::fs::Timestamps {
    let ts = rustix::fs::Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.into(),
    };
    // atime is not archived: it is set to the mtime so that extraction is reproducible too.
    rustix::fs::Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

pub(crate) fn futimens(fd: &impl AsFd, t: Mtime) -> io::Result<()> {
    rustix::fs::futimens(fd, &timestamps(t)).map_err(Into::into)
}

/// `utimensat(.., AT_SYMLINK_NOFOLLOW)`: works on symlinks themselves.
pub(crate) fn utimens_nofollow(dir: &Dir, name: &OsStr, t: Mtime) -> io::Result<()> {
    check_component(name)?;
    rustix::fs::utimensat(dir, name, &timestamps(t), AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
}

pub(crate) fn mkdir(dir: &Dir, name: &OsStr, mode: u32) -> io::Result<()> {
    check_component(name)?;
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)).map_err(Into::into)
}

pub(crate) fn symlink(target: &OsStr, dir: &Dir, name: &OsStr) -> io::Result<()> {
    check_component(name)?;
    rustix::fs::symlinkat(target, dir, name).map_err(Into::into)
}

pub(crate) fn readlink(dir: &Dir, name: &OsStr) -> io::Result<PathBuf> {
    check_component(name)?;
    let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
    let target: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(target.into_bytes());
    Ok(PathBuf::from(target))
}

/// `linkat` without following a symlink at the source.
pub(crate) fn hardlink(
    src_dir: &Dir,
    src_name: &OsStr,
    dst_dir: &Dir,
    dst_name: &OsStr,
) -> io::Result<()> {
    check_component(src_name)?;
    check_component(dst_name)?;
    rustix::fs::linkat(src_dir, src_name, dst_dir, dst_name, AtFlags::empty()).map_err(Into::into)
}

/// `mknodat` for character/block devices (`S_IFCHR`/`S_IFBLK`) and fifos (`S_IFIFO`).
pub(crate) fn mknod(dir: &Dir, name: &OsStr, file_type: u32, dev: (u32, u32)) -> io::Result<()> {
    check_component(name)?;
    let ft = rustix::fs::FileType::from_raw_mode(file_type);
    rustix::fs::mknodat(
        dir,
        name,
        ft,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(dev.0, dev.1),
    )
    .map_err(Into::into)
}

/// Device number split into (major, minor).
pub(crate) fn split_dev(rdev: u64) -> (u32, u32) {
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// Whether this process runs with root's powers over files (effective uid 0).
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
