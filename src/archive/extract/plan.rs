//! Turning one tar entry into what extraction will do, or into a rejection — without touching
//! the filesystem.
//!
//! Everything that can be decided from the entry alone is decided here: the name (relative, no
//! `..`, no NUL, within `NAME_MAX`/`PATH_MAX`, inside the prefix to strip), the type (only
//! files, directories, symlinks, hardlinks and, when allowed, device nodes and fifos), the policy
//! (setuid/setgid files, file capabilities, device nodes) and the metadata (PAX `mtime` and
//! `SCHILY.xattr.*` on top of what the `tar` crate reads).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{ExtractOptions, OutsidePrefix, Reason};
use crate::archive::meta::{EntryKind, Meta, Mtime};
use crate::archive::pax;

/// Longest name of one path component Linux accepts (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;
/// Longest path Linux accepts, without the terminating NUL (`PATH_MAX - 1`).
pub(crate) const PATH_MAX: usize = 4095;

/// What to do with an entry.
pub(crate) enum Plan {
    /// Not extracted (outside the prefix with [`OutsidePrefix::Skip`], or a directory on the way
    /// to the prefix).
    Skip,
    Extract(Planned),
}

/// An accepted entry: its path relative to the destination (empty for the destination itself),
/// what it is and its metadata.
pub(crate) struct Planned {
    pub rel: PathBuf,
    pub kind: EntryKind,
    pub meta: Meta,
}

/// The parts of a tar entry planning needs, read by the caller from the `tar` crate.
pub(crate) struct RawEntry<'a> {
    pub path: &'a [u8],
    pub entry_type: tar::EntryType,
    pub link: Option<&'a [u8]>,
    pub header: &'a tar::Header,
    /// Data size from the header (what the stream is framed by).
    pub size: u64,
    /// `(key, value)` of the entry's PAX records.
    pub pax: &'a [(Vec<u8>, Vec<u8>)],
}

/// Normalised components of an archive path: `.` and empty components dropped; `..`, absolute
/// paths, NUL bytes and over-long names rejected.
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>, Reason> {
    if path.is_empty() {
        return Err(Reason::EmptyName);
    }
    if path.contains(&0) {
        return Err(Reason::NulInName);
    }
    if path.starts_with(b"/") {
        return Err(Reason::AbsolutePath);
    }
    let mut out = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Reason::ParentComponent),
            c if c.len() > NAME_MAX => return Err(Reason::NameTooLong { len: c.len() }),
            c => out.push(c),
        }
    }
    let len = out.iter().map(|c| c.len() + 1).sum::<usize>();
    if len > PATH_MAX {
        return Err(Reason::PathTooLong { len });
    }
    Ok(out)
}

pub(crate) fn join(comps: &[&[u8]]) -> PathBuf {
    comps.iter().map(|c| OsStr::from_bytes(c)).collect()
}

/// Where a path lands relative to the prefix to strip.
enum Placed {
    Inside(PathBuf),
    /// A proper ancestor of the prefix (`seed/` when stripping `seed/etc/`).
    Ancestor,
    Outside,
}

fn place(comps: &[&[u8]], prefix: &[Vec<u8>]) -> Placed {
    let common = comps
        .iter()
        .zip(prefix)
        .take_while(|(a, b)| **a == b.as_slice())
        .count();
    if common == prefix.len() {
        Placed::Inside(join(&comps[prefix.len()..]))
    } else if common == comps.len() {
        Placed::Ancestor
    } else {
        Placed::Outside
    }
}

/// Normalised prefix components from the options.
pub(crate) fn prefix_components(opts: &ExtractOptions) -> Result<Vec<Vec<u8>>, Reason> {
    match &opts.strip_prefix {
        None => Ok(Vec::new()),
        Some(p) => Ok(components(p.as_os_str().as_bytes())
            .or_else(|e| {
                if p.as_os_str().is_empty() {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })?
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()),
    }
}

pub(crate) fn plan(
    raw: &RawEntry<'_>,
    opts: &ExtractOptions,
    prefix: &[Vec<u8>],
) -> Result<Plan, Reason> {
    use tar::EntryType as T;
    let comps = components(raw.path)?;
    let is_dir = matches!(raw.entry_type, T::Directory);
    if !is_dir && raw.path.ends_with(b"/") {
        return Err(Reason::TrailingSlash);
    }
    let rel = match place(&comps, prefix) {
        Placed::Inside(rel) => rel,
        Placed::Ancestor if is_dir => return Ok(Plan::Skip),
        Placed::Ancestor | Placed::Outside => match opts.outside_prefix {
            OutsidePrefix::Skip => return Ok(Plan::Skip),
            OutsidePrefix::Reject => return Err(outside(prefix)),
        },
    };

    let header = raw.header;
    let bad = |what: &str, e: std::io::Error| Reason::BadHeader(format!("{what}: {e}"));
    let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
    let id = |what: &str, v: std::io::Result<u64>| -> Result<u32, Reason> {
        let v = v.map_err(|e| bad(what, e))?;
        u32::try_from(v).map_err(|_| Reason::BadHeader(format!("{what} {v} out of range")))
    };
    let mut uid = id("uid", header.uid())?;
    let mut gid = id("gid", header.gid())?;
    let number = |what: &str, v: &[u8]| -> Result<u64, Reason> {
        std::str::from_utf8(v)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Reason::BadPax(format!("bad {what} {:?}", bstr(v))))
    };
    let mut mtime = Mtime {
        secs: i64::try_from(header.mtime().map_err(|e| bad("mtime", e))?)
            .map_err(|_| Reason::BadHeader("mtime out of range".into()))?,
        nanos: 0,
    };
    let mut xattrs = std::collections::BTreeMap::new();
    for (key, value) in raw.pax {
        if key.starts_with(b"GNU.sparse.") {
            return Err(Reason::UnsupportedType {
                what: "GNU sparse file".into(),
            });
        }
        if key == b"uid" {
            uid = id("PAX uid", Ok(number("uid", value)?))?;
        } else if key == b"gid" {
            gid = id("PAX gid", Ok(number("gid", value)?))?;
        } else if key == b"size" {
            let size = number("size", value)?;
            if size != raw.size {
                return Err(Reason::BadPax(format!(
                    "PAX size {size} disagrees with the header's {}",
                    raw.size
                )));
            }
        } else if key == b"mtime" {
            mtime = pax::parse_mtime(value).map_err(|e| Reason::BadPax(format!("{e:#}")))?;
        } else if let Some(name) = key.strip_prefix(pax::XATTR_PREFIX.as_bytes()) {
            let name = String::from_utf8(name.to_vec())
                .ok()
                .filter(|n| !n.is_empty() && !n.contains('\0'))
                .ok_or_else(|| Reason::BadPax(format!("bad xattr name {:?}", bstr(name))))?;
            xattrs.insert(name, value.clone());
        } else if key == pax::RHT_SELINUX.as_bytes() {
            // GNU tar --selinux: the label as text; the SCHILY record wins if both are there.
            let mut label = value.clone();
            if label.last() != Some(&0) {
                label.push(0);
            }
            xattrs
                .entry("security.selinux".to_string())
                .or_insert(label);
        }
    }

    let link = || -> Result<&[u8], Reason> {
        match raw.link {
            Some(l) if !l.is_empty() => {
                if l.contains(&0) {
                    Err(Reason::NulInName)
                } else {
                    Ok(l)
                }
            }
            _ => Err(Reason::EmptyLinkTarget),
        }
    };
    let device = || -> Result<(u32, u32), Reason> {
        let major = header.device_major().map_err(|e| bad("device major", e))?;
        let minor = header.device_minor().map_err(|e| bad("device minor", e))?;
        Ok((major.unwrap_or(0), minor.unwrap_or(0)))
    };
    let kind = match raw.entry_type {
        T::Regular | T::Continuous => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => EntryKind::Symlink {
            target: PathBuf::from(OsStr::from_bytes(link()?)),
        },
        T::Link => {
            let target = link()?;
            let tcomps = components(target).map_err(|why| Reason::HardlinkTarget {
                target: bstr(target),
                why: why.to_string(),
            })?;
            let target = match place(&tcomps, prefix) {
                Placed::Inside(t) if !t.as_os_str().is_empty() => t,
                _ => {
                    return Err(Reason::HardlinkTarget {
                        target: bstr(target),
                        why: "outside the extracted tree".into(),
                    });
                }
            };
            EntryKind::Hardlink { target }
        }
        T::Char | T::Block | T::Fifo => {
            if !opts.allow_devices {
                return Err(Reason::DeviceNotAllowed);
            }
            let (major, minor) = device()?;
            match raw.entry_type {
                T::Char => EntryKind::CharDevice { major, minor },
                T::Block => EntryKind::BlockDevice { major, minor },
                _ => EntryKind::Fifo,
            }
        }
        other => {
            return Err(Reason::UnsupportedType {
                what: format!("type flag {:?}", char::from(other.as_byte())),
            });
        }
    };
    if rel.as_os_str().is_empty() && kind != EntryKind::Dir {
        return Err(Reason::ReplacesRoot);
    }
    if !opts.allow_setid {
        if kind != EntryKind::Dir && mode & 0o6000 != 0 {
            return Err(Reason::SetIdNotAllowed { mode });
        }
        if xattrs.contains_key("security.capability") {
            return Err(Reason::CapabilityNotAllowed);
        }
    }
    Ok(Plan::Extract(Planned {
        rel,
        kind,
        meta: Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        },
    }))
}

fn outside(prefix: &[Vec<u8>]) -> Reason {
    Reason::OutsidePrefix {
        prefix: bstr(&prefix.join(&b'/')),
    }
}

/// Lossy text of raw name bytes, for messages.
pub(crate) fn bstr(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Display form of a relative path (`.` for the destination itself).
pub(crate) fn shown(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert_eq!(components(b"./").unwrap(), Vec::<&[u8]>::new());
        assert_eq!(components(b"/etc/passwd"), Err(Reason::AbsolutePath));
        assert_eq!(components(b"a/../b"), Err(Reason::ParentComponent));
        assert_eq!(components(b"../x"), Err(Reason::ParentComponent));
        assert_eq!(components(b""), Err(Reason::EmptyName));
        assert!(matches!(
            components("n".repeat(256).as_bytes()),
            Err(Reason::NameTooLong { len: 256 })
        ));
        let deep = vec!["d".repeat(200); 21].join("/");
        assert!(matches!(
            components(deep.as_bytes()),
            Err(Reason::PathTooLong { .. })
        ));
    }

    #[test]
    fn prefixes() {
        let prefix = vec![b"seed".to_vec(), b"etc".to_vec()];
        let at = |p: &[u8]| place(&components(p).unwrap(), &prefix);
        assert!(matches!(at(b"seed/etc/hosts"), Placed::Inside(p) if p == Path::new("hosts")));
        assert!(matches!(at(b"seed/etc/"), Placed::Inside(p) if p.as_os_str().is_empty()));
        assert!(matches!(at(b"seed/"), Placed::Ancestor));
        assert!(matches!(at(b"seed/var/x"), Placed::Outside));
        assert!(matches!(at(b"seed/etcetera"), Placed::Outside));
    }
}
