//! [`LayoutReader`]: reading an OCI image layout that may come from anywhere.

use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::{ANNOTATION_REF_NAME, INDEX_FILE, LayoutMarker, OCI_LAYOUT_FILE, digest_of, hex_of};
use crate::archive::gzip;
use crate::oci::{
    Descriptor, ImageConfig, ImageIndex, ImageManifest, MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_MANIFEST,
};

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

/// An opened OCI image layout.
#[derive(Debug)]
pub struct LayoutReader {
    dir: Dir,
    index: ImageIndex,
}

impl LayoutReader {
    /// Open the layout in `path`: checks `oci-layout` and reads `index.json`.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .with_context(|| format!("opening OCI layout {}", path.display()))?;
        Self::from_dir(dir).with_context(|| format!("reading OCI layout {}", path.display()))
    }

    /// Open a layout through a directory handle.
    pub fn from_dir(dir: Dir) -> Result<Self> {
        let marker: LayoutMarker = read_json(&dir, OCI_LAYOUT_FILE)?;
        if marker.image_layout_version != super::OCI_LAYOUT_VERSION {
            bail!(
                "unsupported imageLayoutVersion {:?}",
                marker.image_layout_version
            );
        }
        let index: ImageIndex = read_json(&dir, INDEX_FILE)?;
        if index.schema_version != 2 {
            bail!("index.json has schemaVersion {}", index.schema_version);
        }
        Ok(LayoutReader { dir, index })
    }

    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// The index entry of the manifest named `ref_name`, or of the only manifest if `None`.
    pub fn manifest_descriptor(&self, ref_name: Option<&str>) -> Result<&Descriptor> {
        let found: Vec<&Descriptor> = match ref_name {
            Some(name) => self
                .index
                .manifests
                .iter()
                .filter(|d| {
                    d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(name)
                })
                .collect(),
            None => self.index.manifests.iter().collect(),
        };
        match found.as_slice() {
            [one] => Ok(one),
            [] => match ref_name {
                Some(name) => bail!("no manifest named {name:?} in the layout"),
                None => bail!("the layout has no manifest"),
            },
            many => bail!(
                "{} manifests match {}; name one",
                many.len(),
                ref_name.unwrap_or("(any)")
            ),
        }
    }

    /// The manifest named `ref_name` (or the only one), verified against its descriptor.
    pub fn manifest(&self, ref_name: Option<&str>) -> Result<(Descriptor, ImageManifest)> {
        let desc = self.manifest_descriptor(ref_name)?.clone();
        if desc.media_type != MEDIA_TYPE_MANIFEST && desc.media_type != MEDIA_TYPE_DOCKER_MANIFEST {
            bail!(
                "{} is a {}, not an image manifest (nested indexes are not supported)",
                desc.digest,
                desc.media_type
            );
        }
        let manifest: ImageManifest = self.read_json_blob(&desc)?;
        if manifest.schema_version != 2 {
            bail!(
                "manifest {} has schemaVersion {}",
                desc.digest,
                manifest.schema_version
            );
        }
        Ok((desc, manifest))
    }

    /// The image config of `manifest`, verified.
    pub fn config(&self, manifest: &ImageManifest) -> Result<ImageConfig> {
        self.read_json_blob(&manifest.config)
    }

    /// Open a blob after checking that its file has the descriptor's size (the content is not
    /// verified: use [`verify_blob`](Self::verify_blob), [`read_blob`](Self::read_blob) or
    /// [`open_layer`](Self::open_layer) for that). Seekable, for reading byte ranges.
    pub fn open_blob(&self, desc: &Descriptor) -> Result<cap_std::fs::File> {
        let path = format!("blobs/sha256/{}", hex_of(&desc.digest)?);
        let file = self
            .dir
            .open(&path)
            .with_context(|| format!("opening blob {}", desc.digest))?;
        let md = file
            .metadata()
            .with_context(|| format!("stat blob {}", desc.digest))?;
        if !md.is_file() {
            bail!("blob {} is not a regular file", desc.digest);
        }
        if md.len() != desc.size {
            bail!(
                "blob {} is {} bytes, its descriptor says {}",
                desc.digest,
                md.len(),
                desc.size
            );
        }
        Ok(file)
    }

    /// Read a whole blob (at most `max` bytes), verified.
    pub fn read_blob(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        if desc.size > max {
            bail!(
                "blob {} is {} bytes, more than {max}",
                desc.digest,
                desc.size
            );
        }
        let mut out = Vec::with_capacity(desc.size as usize);
        self.verifying(desc)?
            .read_to_end(&mut out)
            .with_context(|| format!("reading blob {}", desc.digest))?;
        Ok(out)
    }

    /// Check a blob's size and digest.
    pub fn verify_blob(&self, desc: &Descriptor) -> Result<()> {
        io::copy(&mut self.verifying(desc)?, &mut io::sink())
            .with_context(|| format!("verifying blob {}", desc.digest))?;
        Ok(())
    }

    /// The uncompressed tar stream of a layer (plain or gzip). Its digest is verified as it is
    /// read: reading to the end fails if the blob does not match its descriptor (the archive
    /// [`extract`](crate::archive::extract()) reads its input to the end for this reason).
    pub fn open_layer(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let raw = self.verifying(desc)?;
        Ok(match desc.media_type.as_str() {
            MEDIA_TYPE_LAYER_TAR => Box::new(raw),
            MEDIA_TYPE_LAYER_GZIP | MEDIA_TYPE_DOCKER_LAYER_GZIP => Box::new(gzip::decoder(raw)),
            other => bail!("layer {} has unsupported media type {other}", desc.digest),
        })
    }

    fn verifying(&self, desc: &Descriptor) -> Result<Verifying<cap_std::fs::File>> {
        Ok(Verifying {
            inner: self.open_blob(desc)?,
            hasher: Sha256::new(),
            len: 0,
            digest: desc.digest.clone(),
            size: desc.size,
            verified: false,
        })
    }

    fn read_json_blob<T: DeserializeOwned>(&self, desc: &Descriptor) -> Result<T> {
        let bytes = self.read_blob(desc, MAX_JSON)?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing blob {}", desc.digest))
    }
}

fn read_json<T: DeserializeOwned>(dir: &Dir, name: &str) -> Result<T> {
    let file = dir.open(name).with_context(|| format!("opening {name}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {name}"))?;
    if bytes.len() as u64 > MAX_JSON {
        bail!("{name} is larger than {MAX_JSON} bytes");
    }
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {name}"))
}

/// Checks size and digest of what it reads; the check happens at end of input.
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
    digest: String,
    size: u64,
    verified: bool,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        if self.len > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {} is longer than its descriptor says", self.digest),
            ));
        }
        if n == 0 && !buf.is_empty() && !self.verified {
            let got = digest_of(std::mem::take(&mut self.hasher));
            if self.len != self.size || got != self.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} does not match its descriptor: {} bytes with digest {got}",
                        self.digest, self.len
                    ),
                ));
            }
            self.verified = true;
        }
        Ok(n)
    }
}
