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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

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
    prescan(text)?;
    let mut docs = serde_yaml::Deserializer::from_str(text);
    let Some(first) = docs.next() else {
        return Err(empty());
    };
    let ctx = Ctx::default();
    let value = NodeSeed {
        ctx: &ctx,
        path: YamlPath::root(),
    }
    .deserialize(first)
    .map_err(|e| ctx.problem(e))?;
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

fn too_deep() -> String {
    format!("nests deeper than {MAX_DEPTH} levels; refusing to read it")
}

/// Streams the parser's events (nothing is built) and stops at the first list or mapping nested
/// deeper than [`MAX_DEPTH`], or after [`MAX_NODES`] events.
///
/// Why this exists: libyaml's scanner does work proportional to the flow nesting level for
/// every token, and serde_yaml scans the whole document before building anything, so 1 MiB of
/// `{a: {a: {a: ...` costs minutes before any depth check of ours could run. Streaming stops at
/// the first node that is too deep, so the cost stays small; likewise a huge flat document is
/// refused after [`MAX_NODES`] events instead of being loaded whole. The parser is the very libyaml
/// port serde_yaml uses, so both agree on what the nesting is. Syntax errors are left for the
/// real parse to report.
#[allow(unsafe_code)]
fn prescan(text: &str) -> Result<(), Problem> {
    use std::mem::MaybeUninit;
    use unsafe_libyaml as unsafe_yaml;

    /// Owns an initialised parser and deletes it on every exit path.
    struct Parser(Box<MaybeUninit<unsafe_yaml::yaml_parser_t>>);
    impl Drop for Parser {
        fn drop(&mut self) {
            // SAFETY: only constructed after yaml_parser_initialize succeeded; deleted once.
            unsafe { unsafe_yaml::yaml_parser_delete(self.0.as_mut_ptr()) }
        }
    }

    let mut raw = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
    // SAFETY: `raw` is a heap allocation of the right type that is never moved while the parser
    // lives; initialize fills it in, and on failure we return before using or deleting it.
    if unsafe { unsafe_yaml::yaml_parser_initialize(raw.as_mut_ptr()) }.fail {
        return Ok(()); // out of memory; the real parse will fail the same way
    }
    let mut parser = Parser(raw);
    let p = parser.0.as_mut_ptr();
    // SAFETY: the parser is initialised; `text` outlives `parser` (both are locals of this
    // function and `parser` is dropped first), so the input pointer stays valid.
    unsafe {
        unsafe_yaml::yaml_parser_set_encoding(p, unsafe_yaml::YAML_UTF8_ENCODING);
        unsafe_yaml::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
    }
    let mut depth = 0usize;
    let mut events = 0usize;
    loop {
        let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
        let e = event.as_mut_ptr();
        // SAFETY: `p` is a live parser and `e` points to writable storage for one event.
        if unsafe { unsafe_yaml::yaml_parser_parse(p, e) }.fail {
            return Ok(());
        }
        // SAFETY: yaml_parser_parse succeeded, so the event is initialised; we copy two plain
        // fields and then release the event exactly once.
        let (kind, mark) = unsafe {
            let out = ((*e).type_, (*e).start_mark);
            unsafe_yaml::yaml_event_delete(e);
            out
        };
        let at = |message: String| Problem {
            path: None,
            message,
            location: Some((mark.line as usize + 1, mark.column as usize + 1)),
        };
        events += 1;
        if events > MAX_NODES {
            return Err(at(format!(
                "has more than {MAX_NODES} YAML nodes; refusing to read it"
            )));
        }
        match kind {
            unsafe_yaml::YAML_SEQUENCE_START_EVENT | unsafe_yaml::YAML_MAPPING_START_EVENT => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(at(too_deep()));
                }
            }
            unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => {
                depth = depth.saturating_sub(1);
            }
            unsafe_yaml::YAML_STREAM_END_EVENT => return Ok(()),
            _ => {}
        }
    }
}

fn empty() -> Problem {
    Problem::new("is empty; expected a YAML document")
}

#[derive(Default)]
struct Ctx {
    nodes: Cell<usize>,
    /// The structured problem behind a custom error, so it is reported with our path and
    /// serde_yaml's position rather than serde_yaml's rendering.
    problem: RefCell<Option<(Option<YamlPath>, String)>>,
}

impl Ctx {
    fn fail<E: de::Error>(&self, path: Option<&YamlPath>, msg: String) -> E {
        *self.problem.borrow_mut() = Some((path.cloned(), msg.clone()));
        E::custom(msg)
    }

    fn count<E: de::Error>(&self) -> Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > MAX_NODES {
            return Err(self.fail(
                None,
                format!(
                    "expands to more than {MAX_NODES} YAML nodes (an alias expansion bomb?); \
                     refusing to read it"
                ),
            ));
        }
        Ok(())
    }

    fn problem(&self, e: serde_yaml::Error) -> Problem {
        let location = e.location().map(|l| (l.line(), l.column()));
        match self.problem.borrow_mut().take() {
            Some((path, message)) => Problem {
                path,
                message,
                location,
            },
            // A syntax error from the parser: its rendering already names line and column.
            None => Problem::new(format!("is not valid YAML: {e}")),
        }
    }
}

struct NodeSeed<'c> {
    ctx: &'c Ctx,
    path: YamlPath,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl NodeSeed<'_> {
    fn enter<E: de::Error>(&self) -> Result<(), E> {
        self.ctx.count()?;
        if self.path.len() >= MAX_DEPTH {
            return Err(self.ctx.fail(None, too_deep()));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.ctx.count()?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(NodeSeed {
            ctx: self.ctx,
            path: self.path.index(out.len()),
        })? {
            out.push(v);
        }
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Mapping::new();
        while let Some(k) = map.next_key_seed(KeySeed {
            ctx: self.ctx,
            parent: &self.path,
            seen: &out,
        })? {
            let v = map.next_value_seed(NodeSeed {
                ctx: self.ctx,
                path: self.path.key(&k),
            })?;
            out.insert(Value::String(k), v);
        }
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Value, A::Error> {
        Err(self.ctx.fail(
            Some(&self.path),
            "YAML tags (like !foo or !!binary) are not supported".into(),
        ))
    }
}

/// Deserializes one mapping key: a string, not seen before in this mapping.
struct KeySeed<'c> {
    ctx: &'c Ctx,
    parent: &'c YamlPath,
    seen: &'c Mapping,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn not_a_string<E: de::Error>(&self, what: String) -> E {
        self.ctx.fail(
            Some(self.parent),
            format!("mapping keys must be strings, got {what}; quote the key"),
        )
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<String, E> {
        self.ctx.count()?;
        if k == "<<" {
            return Err(self.ctx.fail(
                Some(self.parent),
                "YAML merge keys (<<) are not supported; write the fields out".into(),
            ));
        }
        if self.seen.contains_key(k) {
            return Err(self.ctx.fail(
                Some(&self.parent.key(k)),
                "duplicate key (it appears more than once in the same mapping)".into(),
            ));
        }
        Ok(k.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Err(self.not_a_string(format!("boolean {v}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Err(self.not_a_string(format!("number {v}")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Err(self.not_a_string(format!("number {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Err(self.not_a_string(format!("number {v}")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(self.not_a_string("null".into()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.not_a_string("a list".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.not_a_string("a mapping".into()))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.ctx.fail(
            Some(self.parent),
            "YAML tags (like !foo or !!binary) are not supported".into(),
        ))
    }
}

const HERE: &str = "\u{1}ibu-locate\u{1}";

/// Line and column (1-based) of the node at `path` in `text` (of its key when `at_key`), or
/// `None` if the path does not exist. Works by walking the text again and raising an error at
/// the node, which serde_yaml stamps with the node's position; only call it on text that
/// [`parse`] accepted.
pub fn locate(text: &str, path: &YamlPath, at_key: bool) -> Option<(usize, usize)> {
    let doc = serde_yaml::Deserializer::from_str(text).next()?;
    match (LocateSeed {
        target: &path.0,
        at_key,
    })
    .deserialize(doc)
    {
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct LocateSeed<'p> {
    target: &'p [Seg],
    at_key: bool,
}

impl<'de> DeserializeSeed<'de> for LocateSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl LocateSeed<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.target.is_empty() {
            Err(E::custom(HERE))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for LocateSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.scalar()?;
        let want = match self.target.first() {
            Some(Seg::Index(i)) => Some(*i),
            _ => None,
        };
        let mut i = 0;
        loop {
            let more = if Some(i) == want {
                seq.next_element_seed(LocateSeed {
                    target: &self.target[1..],
                    at_key: self.at_key,
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.scalar()?;
        let want = match self.target.first() {
            Some(Seg::Key(k)) => Some(k.as_str()),
            _ => None,
        };
        let fire = self.at_key && self.target.len() == 1;
        while let Some(hit) = map.next_key_seed(KeyProbe { want, fire })? {
            if hit {
                map.next_value_seed(LocateSeed {
                    target: &self.target[1..],
                    at_key: self.at_key,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// Reads a key and says whether it is the wanted one (or raises the locating error at it).
struct KeyProbe<'a> {
    want: Option<&'a str>,
    fire: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<bool, E> {
        let hit = self.want == Some(k);
        if hit && self.fire {
            return Err(E::custom(HERE));
        }
        Ok(hit)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fast<T>(f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "took {:?}",
            t.elapsed()
        );
        r
    }

    #[test]
    fn path_display() {
        let p = YamlPath::root()
            .key("metadata")
            .key("annotations")
            .key("image-cleanup.lca.openshift.io/on-prep");
        assert_eq!(
            p.to_string(),
            "metadata.annotations[\"image-cleanup.lca.openshift.io/on-prep\"]"
        );
        let p = YamlPath::dotted("spec.oadpContent").index(2).key("name");
        assert_eq!(p.to_string(), "spec.oadpContent[2].name");
    }

    #[test]
    fn parses_a_plain_document() {
        let v = parse("a: 1\nb: [x, {c: null}]\n").unwrap();
        assert_eq!(v["b"][1]["c"], Value::Null);
    }

    #[test]
    fn duplicate_keys_are_rejected_with_their_line() {
        let e = parse("spec:\n  stage: Idle\n  stage: Prep\n").unwrap_err();
        assert_eq!(e.path.as_ref().unwrap().to_string(), "spec.stage");
        assert!(e.message.contains("duplicate key"), "{e:?}");
        assert_eq!(e.location, Some((3, 3)));
    }

    #[test]
    fn multiple_documents_are_rejected() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("more than one YAML document"), "{e:?}");
    }

    #[test]
    fn leading_document_marker_is_fine() {
        assert!(parse("---\na: 1\n").is_ok());
    }

    #[test]
    fn empty_documents_are_rejected() {
        for t in ["", "# just a comment\n", "---\n", "~\n"] {
            let e = parse(t).unwrap_err();
            assert!(e.message.contains("is empty"), "{t:?}: {e:?}");
        }
    }

    #[test]
    fn tags_merge_keys_and_odd_keys_are_rejected() {
        let e = parse("a: !foo bar\n").unwrap_err();
        assert!(e.message.contains("tags"), "{e:?}");
        let e = parse("base: &b {x: 1}\nc:\n  <<: *b\n").unwrap_err();
        assert!(e.message.contains("merge keys"), "{e:?}");
        let e = parse("1: x\n").unwrap_err();
        assert!(e.message.contains("keys must be strings"), "{e:?}");
        let e = parse("? [a]\n: x\n").unwrap_err();
        assert!(e.message.contains("keys must be strings"), "{e:?}");
    }

    #[test]
    fn syntax_errors_name_a_line() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("is not valid YAML"), "{e:?}");
        assert!(e.message.contains("line"), "{e:?}");
        assert!(!e.render().contains('\n'));
    }

    #[test]
    fn billion_laughs_is_rejected_quickly() {
        let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = fast(|| parse(&s)).unwrap_err();
        assert!(
            e.message.contains("alias expansion") || e.message.contains("repetition"),
            "{e:?}"
        );
    }

    #[test]
    fn one_wide_anchor_referenced_often_is_rejected_quickly() {
        // Passes serde_yaml's own jump limit (few aliases, many events) but would expand to
        // 30 million nodes.
        let wide = vec!["x"; 30_000].join(", ");
        let mut s = format!("w: &w [{wide}]\nrefs:\n");
        for _ in 0..1000 {
            s.push_str("- *w\n");
        }
        assert!(s.len() < MAX_DOCUMENT_BYTES);
        let e = fast(|| parse(&s)).unwrap_err();
        assert!(e.message.contains("alias expansion"), "{e:?}");
    }

    #[test]
    fn deep_nesting_is_rejected_quickly() {
        let n = 200_000;
        let s = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let e = fast(|| parse(&s)).unwrap_err();
        assert!(
            e.message.contains("nests deeper") || e.message.contains("recursion"),
            "{e:?}"
        );
        let mut s = String::new();
        for i in 0..100 {
            s.push_str(&" ".repeat(i));
            s.push_str("a:\n");
        }
        let e = fast(|| parse(&s)).unwrap_err();
        assert!(e.message.contains("nests deeper"), "{e:?}");
    }

    #[test]
    fn huge_flat_documents_are_rejected_quickly() {
        let s = format!("[{}]", vec!["a"; 500_000].join(","));
        let e = fast(|| parse(&s)).unwrap_err();
        assert!(e.message.contains("more than 100000 YAML nodes"), "{e:?}");
    }

    #[test]
    fn deep_flow_mappings_are_rejected_quickly() {
        // libyaml's scanner is quadratic in flow depth: without the streaming pre-scan this
        // input takes minutes.
        let s = "{a: ".repeat(250_000);
        let e = fast(|| parse(&s)).unwrap_err();
        assert!(e.message.contains("nests deeper than 64"), "{e:?}");
        assert_eq!(e.location, Some((1, 257)));
    }

    #[test]
    fn binary_and_non_utf8_are_rejected() {
        let e = decode(b"apiVersion: v1\n\0\0\0").unwrap_err();
        assert!(e.message.contains("NUL byte at offset 15"), "{e:?}");
        let e = decode(b"a: \xff\xfe\n").unwrap_err();
        assert!(e.message.contains("not UTF-8"), "{e:?}");
        assert!(e.message.contains("0xff at offset 3"), "{e:?}");
        let e = decode(b"a: b\nc: \x07\n").unwrap_err();
        assert!(e.message.contains("U+0007"), "{e:?}");
        assert_eq!(e.location, Some((2, 4)));
        assert_eq!(decode("\u{feff}a: 1\n".as_bytes()).unwrap(), "a: 1\n");
        assert!(decode(b"a:\tb\r\n").is_ok());
    }

    #[test]
    fn reading_stops_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'a'; 2048]).unwrap();
        let (f, _) = open_regular(&p).unwrap();
        assert!(matches!(
            read_limited(f, 1024),
            Err(ReadError::TooLarge(1024))
        ));
        let (f, _) = open_regular(&p).unwrap();
        assert_eq!(read_limited(f, 4096).unwrap().len(), 2048);
        let e = open_regular(d.path()).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
    }

    #[test]
    fn fifo_does_not_hang() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = fast(|| open_regular(&p)).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
    }

    #[test]
    fn locate_finds_keys_and_values() {
        let text = "a:\n  b: 1\n  list:\n  - x\n  - {c: 2}\n";
        let p = YamlPath::dotted("a.b");
        assert_eq!(locate(text, &p, true), Some((2, 3)));
        assert_eq!(locate(text, &p, false), Some((2, 6)));
        let p = YamlPath::dotted("a.list").index(1).key("c");
        assert_eq!(locate(text, &p, true), Some((5, 6)));
        assert_eq!(locate(text, &YamlPath::dotted("a.nope"), true), None);
    }

    #[test]
    fn one_line_collapses_breaks() {
        assert_eq!(one_line("a\n  b\r\nc"), "a b c");
    }
}
