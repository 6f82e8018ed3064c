//! Safe extraction of a tar stream into a directory handle.
//!
//! **Threat model.** The archive is hostile (a seed comes from a registry). Nothing it contains
//! may create, change or link anything outside the destination directory, and nothing outside
//! the policy ([`ExtractOptions`]) may be created inside it.
//!
//! **How.** The destination is a cap-std [`Dir`]; every operation is an `*at` system call on one
//! path component relative to an open directory handle, and every directory on the way to an
//! entry is opened with `O_NOFOLLOW` (see the private `archive::sys` module). So:
//!
//! - names are normalised first: absolute names, `..` anywhere, NUL bytes, components over 255
//!   bytes and paths over 4095 bytes are rejected ([`Reason`]);
//! - a symlink is never followed: an entry `link/file` after a symlink entry `link` is rejected
//!   ([`Reason::ThroughSymlink`]); files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so not even
//!   a dangling symlink is written through;
//! - a hardlink must name an earlier non-directory entry of the same archive, resolved the same
//!   way ([`Reason::HardlinkTarget`]), so it cannot link to anything outside the destination;
//! - nothing is replaced: an entry whose name exists is rejected ([`Reason::Duplicate`] for
//!   an earlier entry of the archive, [`Reason::Exists`] otherwise), which covers a file replaced
//!   by a directory and the reverse. The exception is a directory entry naming a directory that
//!   extraction created implicitly (a parent of an earlier entry) or that already existed: it
//!   takes the entry's metadata;
//! - policy: device nodes and fifos only with [`ExtractOptions::allow_devices`]; setuid/setgid
//!   non-directories and `security.capability` xattrs only with [`ExtractOptions::allow_setid`].
//!
//! Every rejection is decided **before anything is written for that entry** (not even a missing
//! parent directory is created), and is an [`ExtractError::Rejected`] naming the entry and why
//! (`anyhow::Error::downcast_ref::<ExtractError>()` finds it).
//!
//! **Atomicity.** [`extract`] is not all-or-nothing: entries before a rejected one stay in the
//! destination. Extract into a fresh staging directory and move it into place only on success —
//! [`extract_staged`] does exactly that, and removes the staging directory on failure, so a
//! rejected archive leaves nothing behind.
//!
//! **Metadata** is applied in the order the kernel requires: data, owner (`chown` clears setuid
//! bits and capabilities), mode, xattrs (ACLs after the mode, capabilities after the owner), mtime
//! (atime is set to the mtime). Directories get theirs after all entries, deepest first, so that
//! creating their contents neither changes their mtime nor runs into their final (perhaps
//! read-only) mode; until then they are mode 0700.

mod apply;
mod plan;
mod read;

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use cap_std::fs::Dir;

use super::sys;
use plan::{Plan, RawEntry};

/// What to do with entries outside [`ExtractOptions::strip_prefix`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutsidePrefix {
    /// Reject the archive.
    #[default]
    Reject,
    /// Leave them out (they are listed in [`ExtractReport::skipped`]).
    Skip,
}

/// Extraction policy.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Only entries under this archive path are extracted, relative to it (`seed/etc` puts
    /// `seed/etc/hosts` at `hosts`). Directory entries on the way to the prefix (`seed/`) are
    /// skipped silently.
    pub strip_prefix: Option<PathBuf>,
    pub outside_prefix: OutsidePrefix,
    /// Create character and block devices and fifos (default: reject them).
    pub allow_devices: bool,
    /// Create setuid/setgid non-directories and files with `security.capability` (default:
    /// reject them; setgid directories are always fine).
    pub allow_setid: bool,
    /// Give entries their archived numeric owner (default: when running as root).
    pub preserve_owner: bool,
    /// Set the archived xattrs, SELinux labels and ACLs included (default: when running as root).
    pub preserve_xattrs: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        let root = sys::is_root();
        ExtractOptions {
            strip_prefix: None,
            outside_prefix: OutsidePrefix::Reject,
            allow_devices: false,
            allow_setid: false,
            preserve_owner: root,
            preserve_xattrs: root,
        }
    }
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Device nodes and fifos.
    pub specials: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Archive names of entries left out (outside the prefix with [`OutsidePrefix::Skip`],
    /// directories on the way to the prefix, PAX global headers holding only comments).
    pub skipped: Vec<String>,
    /// Whether the archive had an entry for the destination itself (`./`, or the prefix), whose
    /// metadata the destination got.
    pub root_metadata: bool,
}

/// Why an entry was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    EmptyName,
    AbsolutePath,
    ParentComponent,
    NulInName,
    NameTooLong { len: usize },
    PathTooLong { len: usize },
    TrailingSlash,
    OutsidePrefix { prefix: String },
    ThroughSymlink { component: String },
    NotADirectory { component: String },
    Exists,
    Duplicate,
    ReplacesRoot,
    DeviceNotAllowed,
    SetIdNotAllowed { mode: u32 },
    CapabilityNotAllowed,
    EmptyLinkTarget,
    HardlinkTarget { target: String, why: String },
    UnsupportedType { what: String },
    BadHeader(String),
    BadPax(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::EmptyName => write!(f, "empty name"),
            Reason::AbsolutePath => write!(f, "absolute path"),
            Reason::ParentComponent => write!(f, "path contains `..`"),
            Reason::NulInName => write!(f, "name contains a NUL byte"),
            Reason::NameTooLong { len } => {
                write!(
                    f,
                    "a path component is {len} bytes (at most {})",
                    plan::NAME_MAX
                )
            }
            Reason::PathTooLong { len } => {
                write!(f, "path is {len} bytes (at most {})", plan::PATH_MAX)
            }
            Reason::TrailingSlash => write!(f, "non-directory entry with a trailing `/`"),
            Reason::OutsidePrefix { prefix } => {
                write!(f, "outside the extracted prefix {prefix:?}")
            }
            Reason::ThroughSymlink { component } => {
                write!(f, "would write through the symlink {component:?}")
            }
            Reason::NotADirectory { component } => {
                write!(f, "{component:?} on the way is not a directory")
            }
            Reason::Exists => write!(f, "something with that name already exists"),
            Reason::Duplicate => write!(f, "an earlier entry of the archive has the same name"),
            Reason::ReplacesRoot => {
                write!(f, "a non-directory entry names the destination itself")
            }
            Reason::DeviceNotAllowed => write!(f, "device node or fifo, not allowed"),
            Reason::SetIdNotAllowed { mode } => {
                write!(f, "setuid/setgid file (mode {mode:04o}), not allowed")
            }
            Reason::CapabilityNotAllowed => {
                write!(f, "file capabilities (security.capability), not allowed")
            }
            Reason::EmptyLinkTarget => write!(f, "link without a target"),
            Reason::HardlinkTarget { target, why } => {
                write!(f, "hardlink to {target:?}: {why}")
            }
            Reason::UnsupportedType { what } => write!(f, "unsupported entry ({what})"),
            Reason::BadHeader(what) => write!(f, "bad header: {what}"),
            Reason::BadPax(what) => write!(f, "bad PAX record: {what}"),
        }
    }
}

/// Typed extraction errors callers can branch on.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("archive entry {entry:?} rejected: {why}")]
    Rejected { entry: String, why: Reason },
}

impl ExtractError {
    /// The rejection in `err`'s chain, if it is one.
    pub fn find(err: &anyhow::Error) -> Option<(&str, &Reason)> {
        match err.downcast_ref::<ExtractError>() {
            Some(ExtractError::Rejected { entry, why }) => Some((entry, why)),
            None => None,
        }
    }
}

pub(crate) fn reject(entry: &[u8], why: Reason) -> anyhow::Error {
    anyhow::Error::new(ExtractError::Rejected {
        entry: plan::bstr(entry),
        why,
    })
}

/// Largest PAX global header ibu reads (they only ever hold comments).
const MAX_GLOBAL_HEADER: u64 = 64 << 10;

/// Extract the tar stream `reader` into `dest`; see the [module docs](self). After the end of
/// the archive the rest of `reader` is read and discarded, so a digest-verifying reader sees
/// all of its input.
pub fn extract(reader: impl Read, dest: &Dir, opts: &ExtractOptions) -> Result<ExtractReport> {
    let prefix = plan::prefix_components(opts)
        .map_err(|why| anyhow!("bad prefix to strip {:?}: {why}", opts.strip_prefix))?;
    let mut state = apply::State::new(dest, opts);
    let mut pending = read::Pending::default();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().context("reading the archive")?.raw(true) {
        let mut entry = entry.context("reading the next archive entry")?;
        if pending.absorb(&mut entry)? {
            continue;
        }
        if entry.header().entry_type().is_pax_global_extensions() {
            let name = entry.header().path_bytes().into_owned();
            if !pending.is_empty() {
                return Err(reject(
                    &name,
                    Reason::BadPax("extension headers before a global header".into()),
                ));
            }
            global_header(&mut entry, &name)?;
            state.report.skipped.push(plan::bstr(&name));
            continue;
        }
        let asm = pending.take(entry.header());
        let planned = {
            let raw = RawEntry {
                path: &asm.path,
                entry_type: entry.header().entry_type(),
                link: asm.link.as_deref(),
                header: entry.header(),
                size: entry.size(),
                pax: &asm.pax,
            };
            plan::plan(&raw, opts, &prefix).map_err(|why| reject(&asm.path, why))?
        };
        match planned {
            Plan::Skip => state.report.skipped.push(plan::bstr(&asm.path)),
            Plan::Extract(planned) => state
                .apply(&asm.path, planned, &mut entry)
                .with_context(|| format!("extracting {}", plan::bstr(&asm.path)))?,
        }
    }
    if !pending.is_empty() {
        bail!("the archive ends with extension headers that describe no entry");
    }
    state.finish_dirs()?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).context("reading the end of the archive stream")?;
    Ok(state.report)
}

fn global_header(entry: &mut tar::Entry<'_, impl Read>, path: &[u8]) -> Result<()> {
    if entry.size() > MAX_GLOBAL_HEADER {
        return Err(reject(path, Reason::BadPax("huge global header".into())));
    }
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .context("reading a PAX global header")?;
    for rec in tar::PaxExtensions::new(&data) {
        let rec = rec.map_err(|e| reject(path, Reason::BadPax(e.to_string())))?;
        if rec.key_bytes() != b"comment" {
            return Err(reject(
                path,
                Reason::UnsupportedType {
                    what: format!("PAX global header record {:?}", plan::bstr(rec.key_bytes())),
                },
            ));
        }
    }
    Ok(())
}

static STAGING_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Extract into a new directory `name` of `parent`, all or nothing: the archive goes into a
/// fresh staging directory next to it, which is synced and renamed to `name` only when the whole
/// archive was extracted, and removed otherwise. `name` must not exist. A destination the archive
/// gives no metadata (no `.` entry) gets mode 0755.
pub fn extract_staged(
    reader: impl Read,
    parent: &Dir,
    name: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport> {
    let leaf = name.as_os_str();
    sys::check_component(leaf).with_context(|| format!("bad directory name {name:?}"))?;
    if sys::lstat(parent, leaf)
        .with_context(|| format!("stat {}", name.display()))?
        .is_some()
    {
        bail!("{} already exists", name.display());
    }
    let staging = PathBuf::from(format!(
        ".{}.partial-{}-{}",
        name.display(),
        std::process::id(),
        STAGING_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let staging_name = staging.as_os_str();
    sys::mkdir(parent, staging_name, 0o700)
        .with_context(|| format!("creating staging directory {}", staging.display()))?;
    let result = (|| -> Result<ExtractReport> {
        let dir = sys::open_dir_nofollow(parent, staging_name)
            .with_context(|| format!("opening staging directory {}", staging.display()))?;
        let report = extract(reader, &dir, opts)?;
        if !report.root_metadata {
            sys::fchmod(&dir, 0o755).context("setting the mode of the extracted directory")?;
        }
        rustix::fs::syncfs(&dir).context("syncing the extracted files")?;
        rustix::fs::renameat_with(
            parent,
            staging_name,
            parent,
            leaf,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .with_context(|| format!("renaming {} to {}", staging.display(), name.display()))?;
        sys::reopen_dir(parent)
            .and_then(|p| p.sync_all())
            .context("syncing the parent directory")?;
        Ok(report)
    })();
    if result.is_err()
        && let Err(e) = parent.remove_dir_all(staging_name)
    {
        tracing::warn!(
            "could not remove staging directory {}: {e}",
            staging.display()
        );
    }
    result
}

/// Display an archive name given as an OS string.
pub(crate) fn os(name: &OsStr) -> String {
    plan::bstr(name.as_bytes())
}
