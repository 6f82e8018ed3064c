//! Tar archives for seed layers: deterministic writing that keeps every bit of file metadata,
//! and extraction that cannot write outside its destination.
//!
//! Why ibu has its own layer plumbing instead of shelling out to `tar`:
//!
//! - **Range fetch.** Seed ostree pack layers are uncompressed tars whose objects a target fetches
//!   one by one with HTTP range requests. That needs the byte offset of every file's data in the
//!   tar stream, which only the writer knows: [`TarBuilder`] records it ([`FileRecord`]).
//! - **Reproducibility.** The same tree must give the same layer bytes, so the same digest, every
//!   time: walk order is sorted, no archiving-time field (atime, ctime, the archiver's user names)
//!   enters a header, owners are numeric, gzip has no name and mtime 0 ([`gzip`]).
//! - **Metadata.** A seed's `/etc` and `/var` must come back with owners, modes (setuid, setgid,
//!   sticky), mtimes and every xattr — SELinux labels (`security.selinux`), file capabilities
//!   (`security.capability`), POSIX ACLs (`system.posix_acl_*`) — or the target boots with a
//!   subtly different system. Xattrs travel as PAX `SCHILY.xattr.<name>` records with the raw
//!   value bytes, as GNU tar, podman and containers/storage write them.
//! - **Safety.** A seed comes from a registry: extraction must treat it as hostile. [`extract()`]
//!   works only through directory handles (cap-std [`Dir`](cap_std::fs::Dir) plus `*at` system
//!   calls on single path components with `O_NOFOLLOW`), so no entry name, symlink or hardlink
//!   can reach outside the destination, and policy (device nodes, setuid files) is checked before
//!   anything of an entry is written.
//!
//! The `tar` crate encodes and decodes the 512-byte header fields and frames the stream when
//! reading (raw mode: one item per header, checksums verified). Its `Builder` can write PAX
//! records with binary values, but its PAX *reader* splits records at newlines, which mangles
//! xattr values that contain a `0x0a` byte (an ACL entry for uid 10, a capability mask). So ibu
//! writes and parses PAX records itself, by their length ([`pax`]), frames the entries it writes
//! itself (so it knows every data offset and controls every byte), and interprets extension
//! headers (PAX `x`, GNU `L`/`K`) itself when reading, with a size bound.

pub mod extract;
pub mod gzip;
mod header;
pub mod meta;
pub mod pax;
mod sys;
pub mod walk;
pub mod write;

pub use extract::{
    ExtractError, ExtractOptions, ExtractReport, OutsidePrefix, Reason, extract, extract_staged,
};
pub use meta::{EntryKind, Meta, Mtime};
pub use walk::{FileKind, WalkEntry, WalkOptions, walk};
pub use write::{BuildOptions, FileRecord, SpecialFiles, TarBuilder};
