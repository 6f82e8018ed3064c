//! Reading YAML that may be hostile.
//!
//! ibu runs as root and reads files that arrive by Ignition, MachineConfig, GitOps or a
//! copy-and-paste, so a broken or malicious file must fail fast with a clear message and must
//! never exhaust memory. The defences, in order:
//!
//! 1. **Size**: files are opened non-blocking (a FIFO cannot hang us), must be regular files, and
//!    are read through `take(limit + 1)`, so a 10 GiB file costs at most `limit + 1` bytes
//!    ([`MAX_DOCUMENT_BYTES`] for the desired document).
//! 2. **Text**: NUL bytes, invalid UTF-8 and C0 control characters are rejected before the YAML
//!    parser sees them, with the byte offset or line.
//! 3. **Structure**: the document is built into a [`serde_yaml::Value`] by a counting visitor
//!    that stops at [`MAX_NODES`] nodes *after alias expansion* (serde_yaml 0.9 only limits the
//!    number of alias jumps to 100 x the event count, which still lets one wide anchor referenced
//!    a thousand times expand to hundreds of millions of nodes) and at [`MAX_DEPTH`] levels of
//!    nesting. It also rejects duplicate keys (with the line of the second one), non-string keys,
//!    merge keys (`<<`) and tags (`!foo`), none of which a Kubernetes object can contain.
//! 4. **One document**: a second `---` document is an error, not silently ignored.
//!
//! [`locate`] finds the line and column of any path afterwards, so that errors found on the
//! `Value` (which carries no positions) can still point at the offending line.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde_yaml::Value;

mod guard;
mod locate;

pub use locate::locate;

/// Largest desired-state document ibu reads (1 MiB; a real one is under 2 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Most YAML nodes (scalars, keys, lists, mappings) one file may expand to, aliases included.
pub const MAX_NODES: usize = 100_000;

/// Deepest nesting of lists and mappings accepted (an ImageBasedUpgrade needs 4).
pub const MAX_DEPTH: usize = 64;

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into a YAML document, displayed as `spec.oadpContent[0].name` or
/// `metadata.annotations["image-cleanup.lca.openshift.io/on-prep"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn root() -> YamlPath {
        YamlPath(Vec::new())
    }

    /// Parses the dotted form used in code (`"spec.seedImageRef.image"`); keys only.
    pub fn dotted(s: &str) -> YamlPath {
        YamlPath(s.split('.').map(|k| Seg::Key(k.to_string())).collect())
    }

    pub fn key(&self, k: &str) -> YamlPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        YamlPath(v)
    }

    pub fn index(&self, i: usize) -> YamlPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        YamlPath(v)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last key, if the path ends in one.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    pub fn parent(&self) -> YamlPath {
        let mut v = self.0.clone();
        v.pop();
        YamlPath(v)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k)
                    if !k.is_empty()
                        && k.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') =>
                {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A problem with a YAML file: where (path and/or 1-based line and column) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Option<YamlPath>,
    pub message: String,
    pub location: Option<(usize, usize)>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Problem {
        Problem {
            path: None,
            message: message.into(),
            location: None,
        }
    }

    pub fn at(path: YamlPath, message: impl Into<String>) -> Problem {
        Problem {
            path: Some(path),
            message: message.into(),
            location: None,
        }
    }

    /// Fills in the line and column of the path (of its key when `at_key`) from `text`.
    pub fn located(mut self, text: &str, at_key: bool) -> Problem {
        if self.location.is_none()
            && let Some(p) = &self.path
        {
            self.location = locate(text, p, at_key);
        }
        self
    }

    /// `path: message (line L, column C)`, one line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.path
            && !p.is_root()
        {
            s.push_str(&p.to_string());
            s.push_str(": ");
        }
        s.push_str(&self.message);
        if let Some((l, c)) = self.location {
            s.push_str(&format!(" (line {l}, column {c})"));
        }
        one_line(&s)
    }
}

/// Collapses line breaks so that every message fits one line of a log or a condition.
pub fn one_line(s: &str) -> String {
    if !s.contains(['\n', '\r']) {
        return s.to_string();
    }
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("is not a regular file ({0})")]
    NotAFile(&'static str),
    #[error("is larger than the {} limit for this file", human_size(*.0))]
    TooLarge(usize),
}

/// `1 MiB` for 1048576.
pub fn human_size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Opens a regular file without blocking on FIFOs and returns it with its metadata (taken from
/// the open descriptor, so checks on it apply to exactly what is read).
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)?;
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(ReadError::NotAFile(what));
    }
    Ok((file, meta))
}

/// Reads at most `limit` bytes; a longer file is an error (and is not read further).
pub fn read_limited(file: File, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(buf)
}

/// Checks that `bytes` is text YAML can hold: no NUL, valid UTF-8, no C0 control characters
/// other than tab, line feed and carriage return. A leading byte-order mark is dropped.
pub fn decode(bytes: &[u8]) -> Result<&str, Problem> {
    if let Some(off) = bytes.iter().position(|&b| b == 0) {
        return Err(Problem::new(format!(
            "contains a NUL byte at offset {off}: this looks like a binary file, not YAML"
        )));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let off = e.valid_up_to();
        Problem::new(format!(
            "is not UTF-8 text (invalid byte 0x{:02x} at offset {off})",
            bytes.get(off).copied().unwrap_or_default()
        ))
    })?;
    check_text(text)
}

/// The text checks of [`decode`] for text that is already a `str`.
pub fn check_text(text: &str) -> Result<&str, Problem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (lineno, line) in text.split('\n').enumerate() {
        if let Some((col, c)) = line
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_ascii_control() && !matches!(c, '\t' | '\r'))
        {
            return Err(Problem {
                path: None,
                message: format!(
                    "contains control character U+{:04X}: this looks like a binary file, not YAML",
                    c as u32
                ),
                location: Some((lineno + 1, col + 1)),
            });
        }
    }
    Ok(text)
}

/// Parses exactly one YAML document into a [`Value`] with the structural guards of this module.
/// An empty document (nothing, or only comments) is an error.
pub fn parse(text: &str) -> Result<Value, Problem> {
    guard::prescan(text)?;
    let mut docs = serde_yaml::Deserializer::from_str(text);
    let Some(first) = docs.next() else {
        return Err(empty());
    };
    let value = guard::build(first)?;
    if docs.next().is_some() {
        return Err(Problem::new(
            "contains more than one YAML document ('---' separator); put exactly one document \
             in the file",
        ));
    }
    if value.is_null() {
        return Err(empty());
    }
    Ok(value)
}

pub(crate) fn too_deep() -> String {
    format!("nests deeper than {MAX_DEPTH} levels; refusing to read it")
}

fn empty() -> Problem {
    Problem::new("is empty; expected a YAML document")
}

#[cfg(test)]
mod tests;
