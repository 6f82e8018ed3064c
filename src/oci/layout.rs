//! OCI image layouts (image-spec "image-layout"): the directory form of an image that skopeo
//! (`oci:<dir>:<ref>`), podman and buildah read and write.
//!
//! ```text
//! <dir>/oci-layout            {"imageLayoutVersion":"1.0.0"}
//! <dir>/index.json            image index; each manifest annotated with its ref name
//! <dir>/blobs/sha256/<hex>    content-addressed blobs: layers, configs, manifests
//! ```
//!
//! ibu builds seeds here and hands the layout to skopeo to push; targets read a layout (or an
//! unpacked `oci-archive`) with [`LayoutReader`]. Writing is crash-safe: a layer streams into a
//! temporary file that is renamed to its digest only when complete ([`LayerWriter`]), JSON blobs
//! and `index.json` are written atomically, so a layout never holds a blob whose content does not
//! match its name, and `index.json` appears last. Reading treats the layout as untrusted: digests
//! are validated before they become file names, blobs are read through a cap-std directory
//! handle, and every blob read is checked against its descriptor's size and digest.
//!
//! Copying a layout with skopeo: use `skopeo copy --preserve-digests`. Without it skopeo
//! gzips uncompressed layers (and drops their annotations), which turns a seed's range-fetchable
//! ostree packs into opaque gzip blobs with other digests (tests/oci_interop.rs shows both).

mod layer;
mod reader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::{Descriptor, ImageIndex, ImageManifest, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};
use crate::fsutil;

pub use layer::{Compression, LayerWriter};
pub use reader::LayoutReader;

/// Contents of the `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";
pub const INDEX_FILE: &str = "index.json";
/// The index annotation naming a manifest (`skopeo copy oci:<dir>:<ref name>`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

/// Writes a new OCI image layout holding one image.
#[derive(Debug)]
pub struct LayoutWriter {
    root: PathBuf,
}

impl LayoutWriter {
    /// Start a layout in `dir`, which must be empty or not exist yet.
    pub fn create(dir: &Path) -> Result<Self> {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    bail!("{} is not empty", dir.display());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fsutil::create_dir_all(dir, 0o755)?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        }
        let marker = serde_json::to_vec(&LayoutMarker {
            image_layout_version: OCI_LAYOUT_VERSION.into(),
        })?;
        fsutil::write_atomic(&dir.join(OCI_LAYOUT_FILE), &marker, 0o644)?;
        fsutil::create_dir_all(&dir.join("blobs/sha256"), 0o755)?;
        Ok(LayoutWriter {
            root: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// A new layer blob; write the (uncompressed) tar stream to it, then
    /// [`finish`](LayerWriter::finish) it.
    pub fn layer(&self, compression: Compression) -> Result<LayerWriter> {
        LayerWriter::new(&self.blobs(), compression)
    }

    /// Add a blob with the given bytes.
    pub fn add_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let digest = super::sha256_digest(bytes);
        let hex = hex_of(&digest)?;
        fsutil::write_atomic(&self.blobs().join(hex), bytes, 0o644)
            .with_context(|| format!("writing blob {digest}"))?;
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        })
    }

    /// Add a JSON document (compact serde_json, so the same value always has the same digest).
    pub fn add_json_blob<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value)
            .with_context(|| format!("serialising a {media_type} document"))?;
        self.add_blob(media_type, &bytes)
    }

    /// Write the manifest (after checking that its config and layers are in the layout) and
    /// `index.json` naming it `ref_name`. Returns the manifest's descriptor as listed in the
    /// index.
    pub fn finish(self, manifest: &ImageManifest, ref_name: &str) -> Result<Descriptor> {
        check_ref_name(ref_name)?;
        for desc in std::iter::once(&manifest.config).chain(&manifest.layers) {
            let path = self.blobs().join(hex_of(&desc.digest)?);
            let md = std::fs::metadata(&path).with_context(|| {
                format!("manifest refers to {}, not in the layout", desc.digest)
            })?;
            if md.len() != desc.size {
                bail!(
                    "blob {} is {} bytes, the manifest says {}",
                    desc.digest,
                    md.len(),
                    desc.size
                );
            }
        }
        let mut desc = self.add_json_blob(MEDIA_TYPE_MANIFEST, manifest)?;
        desc.annotations
            .insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.to_string()),
            manifests: vec![desc.clone()],
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&index)?;
        fsutil::write_atomic(&self.root.join(INDEX_FILE), &bytes, 0o644)?;
        Ok(desc)
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest; anything else is an error (it becomes a
/// file name).
pub fn hex_of(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest:?} (only sha256)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        bail!("malformed digest {digest:?}");
    }
    Ok(hex)
}

/// `sha256:<hex>` of a finished hasher.
pub(crate) fn digest_of(hasher: sha2::Sha256) -> String {
    use sha2::Digest;
    let sum = hasher.finalize();
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in sum.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Check a ref name against the image-layout grammar: components of alphanumerics joined by
/// `-._:@+` or `--`, separated by `/`.
pub fn check_ref_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('/').all(|comp| {
            let b = comp.as_bytes();
            if b.is_empty()
                || !b[0].is_ascii_alphanumeric()
                || !b[b.len() - 1].is_ascii_alphanumeric()
            {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if b[i].is_ascii_alphanumeric() {
                    i += 1;
                } else if b[i..].starts_with(b"--") {
                    i += 2;
                    if !b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                        return false;
                    }
                } else if b"-._:@+".contains(&b[i]) {
                    i += 1;
                    if !b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                        return false;
                    }
                } else {
                    return false;
                }
            }
            true
        });
    if !ok {
        bail!("{name:?} is not a valid OCI layout ref name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        for ok in [
            "latest",
            "v1.2.3",
            "seed-4.16",
            "a/b",
            "x--y",
            "quay.io/ibu/seed:4.16",
        ] {
            check_ref_name(ok).unwrap();
        }
        for bad in ["", "-x", "x-", "a//b", "a b", "x..y", "x---y", "/a", "ü"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_become_file_names_only_when_well_formed() {
        let d = super::super::sha256_digest(b"x");
        assert_eq!(hex_of(&d).unwrap().len(), 64);
        assert!(hex_of("sha256:../../etc/passwd").is_err());
        assert!(hex_of(&d.to_uppercase()).is_err());
        assert!(hex_of("sha512:00").is_err());
    }
}
