//! Reading and validating the desired-state file. STUB: implemented in the spec work.

use std::path::Path;

use super::Desired;

/// A one-line error about the desired document, naming the YAML path when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub message: String,
}

/// A valid desired document and the warnings it raised.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub desired: Desired,
    pub warnings: Vec<String>,
}

pub fn load_file(path: &Path) -> Result<Loaded, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        message: format!("{}: {e}", path.display()),
    })?;
    parse_str(&text, &path.display().to_string())
}

pub fn parse_str(_text: &str, origin: &str) -> Result<Loaded, SpecError> {
    Err(SpecError {
        message: format!("{origin}: parsing not implemented yet"),
    })
}
