//! Where a seed is read from: a registry, or an OCI layout on disk (`oci:DIR`, an unpacked
//! `oci-archive:`), behind one interface so that fetching, inspecting and testing do not care.

use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result};

use crate::archive::gzip;
use crate::oci::layout::LayoutReader;
use crate::oci::{
    Descriptor, ImageConfig, ImageManifest, MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_LAYER_GZIP,
};
use crate::registry::Client;

/// A seed image's parts.
pub trait SeedSource {
    /// The image manifest and its digest.
    fn manifest(&self) -> Result<(ImageManifest, String)>;
    fn config(&self, manifest: &ImageManifest) -> Result<ImageConfig>;
    /// A layer's uncompressed tar stream; its digest is verified when read to the end.
    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;
    /// The bytes of `(offset, len)` ranges of an uncompressed layer blob.
    fn ranges(&self, layer: &Descriptor, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>>;
    /// Bytes transferred from the source so far (0 for local layouts).
    fn bytes_downloaded(&self) -> u64;
    /// For messages: where the seed comes from.
    fn describe(&self) -> String;
}

fn is_gzip(layer: &Descriptor) -> bool {
    layer.media_type == MEDIA_TYPE_LAYER_GZIP || layer.media_type == MEDIA_TYPE_DOCKER_LAYER_GZIP
}

/// A seed in a registry.
pub struct RegistrySource {
    pub client: Client,
    pub reference: String,
}

impl SeedSource for RegistrySource {
    fn manifest(&self) -> Result<(ImageManifest, String)> {
        let m = self.client.manifest()?;
        Ok((m.manifest, m.digest))
    }

    fn config(&self, manifest: &ImageManifest) -> Result<ImageConfig> {
        Ok(self.client.config(manifest)?.config)
    }

    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let blob = self.client.blob_reader(layer)?;
        Ok(if is_gzip(layer) {
            Box::new(gzip::decoder(blob))
        } else {
            Box::new(blob)
        })
    }

    fn ranges(&self, layer: &Descriptor, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        self.client.blob_ranges(&layer.digest, ranges)
    }

    fn bytes_downloaded(&self) -> u64 {
        self.client.bytes_downloaded()
    }

    fn describe(&self) -> String {
        self.reference.clone()
    }
}

/// A seed in an OCI image layout directory.
pub struct LayoutSource {
    pub reader: LayoutReader,
    pub ref_name: Option<String>,
    pub path: std::path::PathBuf,
}

impl SeedSource for LayoutSource {
    fn manifest(&self) -> Result<(ImageManifest, String)> {
        let (d, m) = self.reader.manifest(self.ref_name.as_deref())?;
        Ok((m, d.digest))
    }

    fn config(&self, manifest: &ImageManifest) -> Result<ImageConfig> {
        self.reader.config(manifest)
    }

    fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        self.reader.open_layer(layer)
    }

    fn ranges(&self, layer: &Descriptor, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        let mut f = self.reader.open_blob(layer)?;
        ranges
            .iter()
            .map(|&(off, len)| {
                let mut buf = vec![0; len as usize];
                f.seek(SeekFrom::Start(off))
                    .and_then(|_| f.read_exact(&mut buf))
                    .with_context(|| {
                        format!("reading {len} bytes at {off} of blob {}", layer.digest)
                    })?;
                Ok(buf)
            })
            .collect()
    }

    fn bytes_downloaded(&self) -> u64 {
        0
    }

    fn describe(&self) -> String {
        format!("oci:{}", self.path.display())
    }
}
