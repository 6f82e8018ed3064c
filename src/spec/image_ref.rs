//! Container image references (`[registry[:port]/]repo[:tag][@digest]`).
//! STUB: implemented in the spec work.

use anyhow::Result;

/// A parsed, validated image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub original: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef> {
        if s.trim().is_empty() {
            anyhow::bail!("empty image reference");
        }
        Ok(ImageRef {
            original: s.to_string(),
        })
    }
}
