//! Blobs: whole and verified as they stream, or byte ranges of them.
//!
//! A whole blob ([`BlobReader`]) is hashed while the caller reads it, so a multi-GiB layer is
//! never held in memory and never trusted before its last byte matched the descriptor's size
//! and digest. Ranges ([`fetch_ranges`]) cannot be checked against the blob digest — the caller
//! verifies what they contain (ostree checks every object it imports) — but each must come
//! back as a 206 whose `Content-Range` and length are exactly the ones asked for. A server that
//! ignores `Range` and answers 200 would send the whole blob for every range; that answer is
//! abandoned unread and reported as [`RegistryError::RangeNotSupported`] so the caller can fall
//! back to one whole-blob download.

use std::fmt;
use std::io::{self, Read};

use super::digest::Verifier;
use super::error::{NotFoundKind, RegistryError};
use super::http::{Counting, Transport};

/// A streaming reader over one blob that fails, at the latest at EOF, if the blob's size or
/// digest differs from its descriptor. Errors are `io::Error`s of kind `InvalidData` holding a
/// [`RegistryError`] ([`RegistryError::from_io`]).
pub struct BlobReader {
    body: Counting<ureq::BodyReader<'static>>,
    /// `None` once EOF was verified.
    verifier: Option<Verifier>,
    expected_size: u64,
    received: u64,
    registry: String,
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("registry", &self.registry)
            .field("expected_size", &self.expected_size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    pub(crate) fn new(
        body: Counting<ureq::BodyReader<'static>>,
        verifier: Verifier,
        expected_size: u64,
        registry: String,
    ) -> BlobReader {
        BlobReader {
            body,
            verifier: Some(verifier),
            expected_size,
            received: 0,
            registry,
        }
    }

    fn digest(&self) -> String {
        self.verifier
            .as_ref()
            .map(|v| v.expected().to_string())
            .unwrap_or_default()
    }

    fn size_mismatch(&self, actual: u64) -> io::Error {
        RegistryError::SizeMismatch {
            registry: self.registry.clone(),
            digest: self.digest(),
            expected: self.expected_size,
            actual,
        }
        .into_io()
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verifier.is_none() || buf.is_empty() {
            return Ok(0);
        }
        let n = self.body.read(buf).map_err(|e| {
            RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!(
                    "the transfer of blob {} broke off after {} of {} bytes: {e}",
                    self.digest(),
                    self.received,
                    self.expected_size
                ),
            }
            .into_io()
        })?;
        if n == 0 {
            if self.received != self.expected_size {
                return Err(self.size_mismatch(self.received));
            }
            let Some(verifier) = self.verifier.take() else {
                return Ok(0);
            };
            let expected = verifier.expected().to_string();
            return match verifier.finish() {
                Ok(()) => Ok(0),
                Err(actual) => Err(RegistryError::DigestMismatch {
                    registry: self.registry.clone(),
                    what: format!("blob {expected}"),
                    expected,
                    actual,
                }
                .into_io()),
            };
        }
        self.received += n as u64;
        if self.received > self.expected_size {
            // Stop early rather than stream an endless body.
            return Err(self.size_mismatch(self.received));
        }
        if let Some(v) = self.verifier.as_mut() {
            v.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// GET `/v2/<repo>/blobs/<digest>` and return the response of a 200; errors for anything else.
pub(crate) fn get_blob(
    t: &Transport,
    digest: &str,
    headers: &[(&str, &str)],
) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
    let path = format!("/v2/{}/blobs/{digest}", t.repository);
    let resp = t.get(&path, headers)?;
    let status = resp.status().as_u16();
    if status == 404 {
        let (codes, _) = t.error_body(resp);
        return Err(not_found(t, &codes, digest));
    }
    if !(200..300).contains(&status) {
        return Err(t.status_error(resp, &format!("fetching blob {digest}")));
    }
    Ok(resp)
}

fn not_found(t: &Transport, codes: &[String], digest: &str) -> RegistryError {
    if codes.iter().any(|c| c == "NAME_UNKNOWN") {
        RegistryError::NotFound {
            registry: t.registry.clone(),
            kind: NotFoundKind::Repository,
            reference: format!("{}/{}", t.registry, t.repository),
        }
    } else {
        RegistryError::NotFound {
            registry: t.registry.clone(),
            kind: NotFoundKind::Blob,
            reference: format!("{}/{}@{digest}", t.registry, t.repository),
        }
    }
}

/// Fetch each `(offset, len)` range of blob `digest`, one request after another on the pooled
/// connection. Empty ranges come back empty without a request.
pub(crate) fn fetch_ranges(
    t: &Transport,
    digest: &str,
    ranges: &[(u64, u64)],
) -> Result<Vec<Vec<u8>>, RegistryError> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(offset, len) in ranges {
        if len == 0 {
            out.push(Vec::new());
            continue;
        }
        let last = offset
            .checked_add(len - 1)
            .ok_or_else(|| RegistryError::Protocol {
                registry: t.registry.clone(),
                detail: format!("range {offset}+{len} of blob {digest} overflows"),
            })?;
        out.push(fetch_range(t, digest, offset, last)?);
    }
    Ok(out)
}

fn fetch_range(
    t: &Transport,
    digest: &str,
    first: u64,
    last: u64,
) -> Result<Vec<u8>, RegistryError> {
    let range = format!("bytes={first}-{last}");
    let path = format!("/v2/{}/blobs/{digest}", t.repository);
    let resp = t.get(&path, &[("Range", &range)])?;
    match resp.status().as_u16() {
        206 => {}
        200 => {
            // Dropping the unread body closes that connection: cheaper than reading the blob.
            return Err(RegistryError::RangeNotSupported {
                registry: t.registry.clone(),
                digest: digest.to_string(),
            });
        }
        404 => {
            let (codes, _) = t.error_body(resp);
            return Err(not_found(t, &codes, digest));
        }
        416 => {
            t.drain(resp);
            return Err(RegistryError::Protocol {
                registry: t.registry.clone(),
                detail: format!(
                    "range {first}-{last} is beyond the end of blob {digest} (HTTP 416)"
                ),
            });
        }
        _ => return Err(t.status_error(resp, &format!("fetching {range} of blob {digest}"))),
    }
    let bad = |detail: String| RegistryError::Protocol {
        registry: t.registry.clone(),
        detail,
    };
    if let Some(cr) = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
    {
        let (a, b) = parse_content_range(cr).ok_or_else(|| {
            bad(format!(
                "blob {digest}: malformed Content-Range {cr:?} for {range}"
            ))
        })?;
        if (a, b) != (first, last) {
            return Err(bad(format!(
                "blob {digest}: asked for {range}, got Content-Range {cr:?} (range beyond the \
                 end of the blob?)"
            )));
        }
    }
    let len = last - first + 1;
    let body = t.read_body(resp, len, &format!("{range} of blob {digest}"))?;
    if body.len() as u64 != len {
        return Err(bad(format!(
            "blob {digest}: {range} returned {} bytes instead of {len}",
            body.len()
        )));
    }
    Ok(body)
}

/// `bytes FIRST-LAST/TOTAL` (or `/*`) → (FIRST, LAST).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, _total) = rest.split_once('/')?;
    let (a, b) = span.trim().split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 10-19/307200"), Some((10, 19)));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
