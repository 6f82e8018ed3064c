//! Resolving a reference to an image manifest, and reading its config.
//!
//! Registries serve four manifest kinds for one GET: OCI image manifests and indexes, and
//! Docker schema 2 manifests and manifest lists (what `podman push` writes by default to some
//! registries). Manifests and their Docker twins have the same shape, so both parse into
//! [`ImageManifest`]. An index resolves to its `linux/<arch>` entry, fetched by digest and
//! verified. Docker schema 1 (signed, pre-2017) is refused with a message saying so.
//!
//! The manifest digest is the sha256 of the bytes as served: a reference by digest must match
//! it; for a tag, the registry's `Docker-Content-Digest` header, when present, must match it
//! too — the digest returned is then the one `skopeo inspect` shows.

use anyhow::{Context, Result, anyhow};

use super::blob;
use super::digest::{DigestCheck, verify};
use super::error::{NotFoundKind, RegistryError};
use super::http::Transport;
use crate::oci::{
    Descriptor, ImageConfig, ImageIndex, ImageManifest, MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, sha256_digest,
};

/// Largest manifest accepted (distribution's own limit).
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
const MAX_CONFIG: u64 = 64 << 20;

const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// An image manifest as resolved from the registry.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub manifest: ImageManifest,
    /// Digest of [`FetchedManifest::raw`].
    pub digest: String,
    pub media_type: String,
    /// The manifest bytes exactly as served.
    pub raw: Vec<u8>,
    /// The digest of the image index the manifest was picked from, if the reference named one.
    pub index_digest: Option<String>,
}

/// An image configuration and its bytes.
#[derive(Debug, Clone)]
pub struct FetchedConfig {
    pub config: ImageConfig,
    pub digest: String,
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
}

struct Raw {
    bytes: Vec<u8>,
    media_type: String,
    kind: Kind,
    digest: String,
}

/// Resolve `reference` (tag or digest) to an image manifest for `arch`.
pub(crate) fn resolve(t: &Transport, reference: &str, arch: &str) -> Result<FetchedManifest> {
    let top = fetch(t, reference)?;
    match top.kind {
        Kind::Manifest => finish(t, reference, top, None),
        Kind::Index => {
            let index: ImageIndex = serde_json::from_slice(&top.bytes)
                .with_context(|| format!("parsing the image index {}", shown(t, reference)))?;
            let entry = pick_platform(t, reference, &index, arch)?;
            let child = fetch(t, &entry.digest)?;
            if child.kind != Kind::Manifest {
                return Err(anyhow!(
                    "registry {}: the {arch} entry {} of image index {} is not an image manifest \
                     ({})",
                    t.registry,
                    entry.digest,
                    shown(t, reference),
                    child.media_type
                ));
            }
            finish(t, &entry.digest, child, Some(top.digest))
        }
    }
}

fn finish(
    t: &Transport,
    reference: &str,
    raw: Raw,
    index_digest: Option<String>,
) -> Result<FetchedManifest> {
    let manifest: ImageManifest = serde_json::from_slice(&raw.bytes)
        .with_context(|| format!("parsing the image manifest {}", shown(t, reference)))?;
    Ok(FetchedManifest {
        manifest,
        digest: raw.digest,
        media_type: raw.media_type,
        raw: raw.bytes,
        index_digest,
    })
}

/// `registry/repo:tag` or `registry/repo@digest`, for messages.
fn shown(t: &Transport, reference: &str) -> String {
    let sep = if reference.contains(':') { '@' } else { ':' };
    format!("{}/{}{sep}{reference}", t.registry, t.repository)
}

fn fetch(t: &Transport, reference: &str) -> Result<Raw> {
    let accept = [
        MEDIA_TYPE_MANIFEST,
        MEDIA_TYPE_INDEX,
        MEDIA_TYPE_DOCKER_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    ]
    .join(", ");
    let path = format!("/v2/{}/manifests/{reference}", t.repository);
    let resp = t.get(&path, &[("Accept", &accept)])?;
    let status = resp.status().as_u16();
    if status == 404 {
        let (codes, _) = t.error_body(resp);
        let repo_unknown = codes.iter().any(|c| c == "NAME_UNKNOWN");
        return Err(RegistryError::NotFound {
            registry: t.registry.clone(),
            kind: if repo_unknown {
                NotFoundKind::Repository
            } else {
                NotFoundKind::Manifest
            },
            reference: if repo_unknown {
                format!("{}/{}", t.registry, t.repository)
            } else {
                shown(t, reference)
            },
        }
        .into());
    }
    if !(200..300).contains(&status) {
        return Err(t
            .status_error(resp, &format!("fetching manifest {}", shown(t, reference)))
            .into());
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let served_digest = header("docker-content-digest");
    let bytes = t.read_body(
        resp,
        MAX_MANIFEST,
        &format!("manifest {}", shown(t, reference)),
    )?;

    let mismatch = |expected: &str, actual: String| RegistryError::DigestMismatch {
        registry: t.registry.clone(),
        what: format!("manifest {}", shown(t, reference)),
        expected: expected.to_string(),
        actual,
    };
    let digest = if reference.contains(':') {
        match verify(reference, &bytes) {
            Ok(()) => reference.to_string(),
            Err(DigestCheck::Mismatch(actual)) => return Err(mismatch(reference, actual).into()),
            Err(DigestCheck::Invalid(why)) => {
                return Err(anyhow!("registry {}: {why}", t.registry));
            }
        }
    } else {
        let computed = sha256_digest(&bytes);
        match served_digest.filter(|d| d.starts_with("sha256:")) {
            Some(d) if d != computed => return Err(mismatch(&d, computed).into()),
            _ => computed,
        }
    };
    let (media_type, kind) = kind_of(content_type.as_deref(), &bytes).map_err(|why| {
        anyhow!(
            "registry {}: manifest {}: {why}",
            t.registry,
            shown(t, reference)
        )
    })?;
    Ok(Raw {
        bytes,
        media_type,
        kind,
        digest,
    })
}

/// The media type and kind of a manifest: its `Content-Type` when that is a manifest type,
/// else its `mediaType` field, else its shape.
fn kind_of(content_type: Option<&str>, bytes: &[u8]) -> Result<(String, Kind), String> {
    let declared = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| c.starts_with("application/vnd."));
    let media_type = match declared {
        Some(c) => c,
        None => {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("the manifest is not JSON: {e}"))?;
            match v.get("mediaType").and_then(|m| m.as_str()) {
                Some(m) => m.to_string(),
                None if v.get("manifests").is_some() => MEDIA_TYPE_INDEX.to_string(),
                None if v.get("config").is_some() => MEDIA_TYPE_MANIFEST.to_string(),
                None => return Err("the document is neither a manifest nor an index".into()),
            }
        }
    };
    let kind = match media_type.as_str() {
        MEDIA_TYPE_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => Kind::Manifest,
        MEDIA_TYPE_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => Kind::Index,
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => {
            return Err(
                "Docker schema 1 manifests are not supported; push the image again \
                        with skopeo or podman (OCI or Docker schema 2)"
                    .into(),
            );
        }
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };
    Ok((media_type, kind))
}

/// The `linux/<arch>` entry of an index (one without a variant, or `v8` for arm64, preferred).
fn pick_platform<'a>(
    t: &Transport,
    reference: &str,
    index: &'a ImageIndex,
    arch: &str,
) -> Result<&'a Descriptor, RegistryError> {
    let matching: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .collect();
    let preferred = matching.iter().copied().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| match p.variant.as_deref() {
                None => true,
                Some(v) => arch == "arm64" && v == "v8",
            })
    });
    if let Some(d) = preferred.or(matching.first().copied()) {
        return Ok(d);
    }
    let available = index
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    Err(RegistryError::NoPlatform {
        registry: t.registry.clone(),
        reference: shown(t, reference),
        wanted: format!("linux/{arch}"),
        available,
    })
}

/// Fetch and verify the config blob of `manifest`.
pub(crate) fn config(t: &Transport, manifest: &ImageManifest) -> Result<FetchedConfig> {
    let desc = &manifest.config;
    if desc.size > MAX_CONFIG {
        return Err(anyhow!(
            "registry {}: the image config {} is {} bytes, more than the {MAX_CONFIG} accepted",
            t.registry,
            desc.digest,
            desc.size
        ));
    }
    let resp = blob::get_blob(t, &desc.digest, &[])?;
    let raw = t.read_body(resp, desc.size, &format!("image config {}", desc.digest))?;
    if raw.len() as u64 != desc.size {
        return Err(RegistryError::SizeMismatch {
            registry: t.registry.clone(),
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: raw.len() as u64,
        }
        .into());
    }
    match verify(&desc.digest, &raw) {
        Ok(()) => {}
        Err(DigestCheck::Mismatch(actual)) => {
            return Err(RegistryError::DigestMismatch {
                registry: t.registry.clone(),
                what: format!("image config {}", desc.digest),
                expected: desc.digest.clone(),
                actual,
            }
            .into());
        }
        Err(DigestCheck::Invalid(why)) => return Err(anyhow!("registry {}: {why}", t.registry)),
    }
    let config: ImageConfig = serde_json::from_slice(&raw).with_context(|| {
        format!(
            "parsing the image config {} from {}/{}",
            desc.digest, t.registry, t.repository
        )
    })?;
    Ok(FetchedConfig {
        config,
        digest: desc.digest.clone(),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_content_type_field_or_shape() {
        let k = |ct: Option<&str>, body: &str| kind_of(ct, body.as_bytes());
        assert_eq!(
            k(
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                "{}"
            )
            .unwrap()
            .1,
            Kind::Manifest
        );
        assert_eq!(
            k(Some(MEDIA_TYPE_DOCKER_MANIFEST_LIST), "{}").unwrap().1,
            Kind::Index
        );
        assert_eq!(
            k(
                Some("application/json"),
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            )
            .unwrap(),
            (MEDIA_TYPE_INDEX.to_string(), Kind::Index)
        );
        assert_eq!(
            k(None, r#"{"schemaVersion":2,"manifests":[]}"#).unwrap().1,
            Kind::Index
        );
        assert_eq!(
            k(None, r#"{"schemaVersion":2,"config":{}}"#).unwrap().1,
            Kind::Manifest
        );
        assert!(
            k(Some(DOCKER_SCHEMA1_SIGNED), "{}")
                .unwrap_err()
                .contains("schema 1")
        );
        assert!(k(None, "not json").unwrap_err().contains("not JSON"));
        assert!(
            k(Some("application/vnd.foo"), "{}")
                .unwrap_err()
                .contains("unsupported")
        );
    }
}
