//! Reading and validating the desired-state file (`/etc/ibu/upgrade.yaml`).
//!
//! The file is the operator's only way to talk to ibu, so every mistake in it must come back as
//! one line that says where (file, YAML path, line and column) and what. The message format is
//!
//! ```text
//! <origin>: <yaml.path>: <what is wrong> (line L, column C)
//! ```
//!
//! where the path and position are left out when there is none (e.g. for a file that is not
//! text). Warnings (things that are accepted but probably not meant) use the same format.
//!
//! The pipeline: size limit while reading → text checks → guarded YAML parse (one document,
//! no duplicate keys, no alias bombs; see [`super::yaml`]) → `apiVersion`/`kind` → unknown
//! fields against the wire schema → typed read → semantic validation (see `validate.rs`).

use std::path::Path;

use super::Desired;
use super::yaml::{self, Problem, ReadError};

pub use super::yaml::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES};

/// A one-line error about the desired document, naming the YAML path when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The full one-line message: `<origin>: <path>: <what> (line L, column C)`.
    pub message: String,
    /// The YAML path the error is about (`spec.seedImageRef.image`), if any.
    pub path: Option<String>,
    /// 1-based line of the offending node, if known.
    pub line: Option<usize>,
    /// 1-based column of the offending node, if known.
    pub column: Option<usize>,
}

impl SpecError {
    /// An error that is not about a place in the document.
    pub fn new(message: impl Into<String>) -> SpecError {
        SpecError {
            message: yaml::one_line(&message.into()),
            path: None,
            line: None,
            column: None,
        }
    }

    fn from_problem(origin: &str, p: &Problem) -> SpecError {
        SpecError {
            message: render(origin, p),
            path: p
                .path
                .as_ref()
                .filter(|p| !p.is_root())
                .map(ToString::to_string),
            line: p.location.map(|l| l.0),
            column: p.location.map(|l| l.1),
        }
    }
}

fn render(origin: &str, p: &Problem) -> String {
    yaml::one_line(&format!("{origin}: {}", p.render()))
}

/// A valid desired document and the warnings it raised (each a one-line message in the same
/// format as [`SpecError`]).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub desired: Desired,
    pub warnings: Vec<String>,
}

/// Reads and validates the desired document at `path`. Reads at most [`MAX_DOCUMENT_BYTES`]
/// (plus one, to notice a larger file); FIFOs, devices and directories are refused.
pub fn load_file(path: &Path) -> Result<Loaded, SpecError> {
    let origin = path.display().to_string();
    let read_err = |e: ReadError| SpecError::new(format!("{origin}: {}", read_error_text(&e)));
    let (file, _) = yaml::open_regular(path).map_err(read_err)?;
    let bytes = yaml::read_limited(file, MAX_DOCUMENT_BYTES).map_err(read_err)?;
    parse_bytes(&bytes, &origin)
}

fn read_error_text(e: &ReadError) -> String {
    match e {
        ReadError::Io(io) => format!("cannot read: {io}"),
        other => other.to_string(),
    }
}

/// Validates a document given as bytes (checked for NUL bytes and UTF-8 first).
pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Loaded, SpecError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(SpecError::new(format!(
            "{origin}: {}",
            ReadError::TooLarge(MAX_DOCUMENT_BYTES)
        )));
    }
    let text = yaml::decode(bytes).map_err(|p| SpecError::from_problem(origin, &p))?;
    parse_checked(text, origin)
}

/// Validates a document given as text; `origin` names it in messages (usually the file path).
pub fn parse_str(text: &str, origin: &str) -> Result<Loaded, SpecError> {
    parse_bytes(text.as_bytes(), origin)
}

fn parse_checked(text: &str, origin: &str) -> Result<Loaded, SpecError> {
    let value = yaml::parse(text).map_err(|p| SpecError::from_problem(origin, &p))?;
    let (desired, warnings) =
        super::validate::desired(value, text).map_err(|p| SpecError::from_problem(origin, &p))?;
    Ok(Loaded {
        desired,
        warnings: warnings.iter().map(|w| render(origin, w)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ApiVersion, Stage};

    const MINIMAL_V1: &str = "apiVersion: lca.openshift.io/v1\nkind: ImageBasedUpgrade\n\
                              metadata:\n  name: upgrade\nspec:\n  stage: Idle\n";

    #[test]
    fn minimal_v1_is_idle() {
        let l = parse_str(MINIMAL_V1, "t.yaml").unwrap();
        assert_eq!(l.desired, Desired::idle());
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn errors_carry_origin_path_and_position() {
        let text = MINIMAL_V1.replace("stage: Idle", "stag: Idle");
        let e = parse_str(&text, "/etc/ibu/upgrade.yaml").unwrap_err();
        assert_eq!(
            e.message,
            "/etc/ibu/upgrade.yaml: spec.stag: unknown field; did you mean \"stage\"? (line 6, column 3)"
        );
        assert_eq!(e.path.as_deref(), Some("spec.stag"));
        assert_eq!((e.line, e.column), (Some(6), Some(3)));
    }

    #[test]
    fn load_file_reads_and_reports_missing_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("upgrade.yaml");
        std::fs::write(&p, MINIMAL_V1).unwrap();
        let l = load_file(&p).unwrap();
        assert_eq!(l.desired.api_version, ApiVersion::V1);
        assert_eq!(l.desired.stage, Stage::Idle);
        let e = load_file(&d.path().join("nope.yaml")).unwrap_err();
        assert!(e.message.contains("nope.yaml: cannot read"), "{e}");
    }

    #[test]
    fn load_file_refuses_oversized_files_without_reading_them_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big.yaml");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(10 << 30).unwrap(); // sparse 10 GiB
        // Reading 10 GiB would take minutes and the memory; the size check comes first.
        let e = load_file(&p).unwrap_err();
        assert!(e.message.contains("larger than the 1 MiB limit"), "{e}");
    }
}
