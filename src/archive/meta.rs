//! The metadata of one archive entry, as ibu writes and restores it.
//!
//! One model for both directions keeps the writer and the extractor honest with each other: what
//! [`TarBuilder`](super::TarBuilder) reads from a file is exactly what
//! [`extract`](super::extract()) puts back, field by field.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A modification time with nanoseconds (`nanos < 1_000_000_000`); `secs` may be negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

impl Mtime {
    pub const fn from_secs(secs: i64) -> Self {
        Mtime { secs, nanos: 0 }
    }
}

/// Owner, permission bits, mtime and extended attributes of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid (`0o4000`), setgid (`0o2000`) and sticky (`0o1000`); the
    /// file type is not part of it.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
    /// Every extended attribute by full name (`security.selinux`, `user.foo`,
    /// `system.posix_acl_access`), raw value bytes. Sorted, so archives are deterministic.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    /// Root-owned with `mode`, mtime 0 and no xattrs: the metadata of synthesized entries.
    pub fn root(mode: u32) -> Self {
        Meta {
            mode,
            ..Meta::default()
        }
    }
}

/// What an entry is. Paths are raw bytes as Linux knows them (`PathBuf` from `OsStr` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink {
        target: PathBuf,
    },
    /// A hard link to an earlier entry of the same archive (its archive path).
    Hardlink {
        target: PathBuf,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

impl EntryKind {
    /// Short human name for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            EntryKind::File => "regular file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
            EntryKind::CharDevice { .. } => "character device",
            EntryKind::BlockDevice { .. } => "block device",
            EntryKind::Fifo => "fifo",
        }
    }

    /// Device nodes and fifos: archived and extracted only when explicitly allowed.
    pub fn is_special(&self) -> bool {
        matches!(
            self,
            EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } | EntryKind::Fifo
        )
    }
}
