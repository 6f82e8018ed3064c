//! Hand-made OCI image layouts (image-spec `image-layout.md`) to push into a [`super::TestRegistry`].
//!
//! A seed's pack layers are *uncompressed* tars read with range requests, so the tests need
//! images whose layer blobs they know byte for byte: [`Layout::add_image`] tars the given files
//! (GNU tar, sorted, owner 0, mtime 0) into an uncompressed `application/vnd.oci.image.layer.v1.tar`
//! layer, writes a config with the given labels and a manifest, and tags it in `index.json`;
//! [`Layout::add_index`] adds a multi-architecture image index over such images. The documents
//! are the crate's own [`ibu::oci`] types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use ibu::oci::{
    ContainerConfig, Descriptor, ImageConfig, ImageIndex, ImageManifest, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_MANIFEST, Platform, RootFs, sha256_digest,
};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What goes into one image.
pub struct ImageSpec<'a> {
    /// OCI architecture (`amd64`).
    pub arch: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// Files of the single layer: path inside the layer → content.
    pub files: &'a [(&'a str, Vec<u8>)],
}

/// An image written into a layout.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    pub manifest: ImageManifest,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config: ImageConfig,
    /// The layer blob's file, in the layout's `blobs/`.
    pub layer_file: PathBuf,
}

impl LayoutImage {
    pub fn layer(&self) -> &Descriptor {
        &self.manifest.layers[0]
    }
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    index: ImageIndex,
}

impl Layout {
    pub fn create(dir: &Path) -> Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let layout = Layout {
            dir: dir.to_path_buf(),
            index: ImageIndex {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_INDEX.to_string()),
                manifests: Vec::new(),
                annotations: BTreeMap::new(),
            },
        };
        layout.save()?;
        Ok(layout)
    }

    /// Store `bytes` as a blob; returns its digest and file.
    pub fn add_blob(&self, bytes: &[u8]) -> Result<(String, PathBuf)> {
        let digest = sha256_digest(bytes);
        let file = self.blob_path(&digest);
        std::fs::write(&file, bytes)?;
        Ok((digest, file))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Add a one-layer image, tagged `tag` in `index.json` when given.
    pub fn add_image(&mut self, tag: Option<&str>, spec: &ImageSpec) -> Result<LayoutImage> {
        let tar = tar_of(&self.dir, spec.files)?;
        let (layer_digest, layer_file) = self.add_blob(&tar)?;
        let config = ImageConfig {
            created: Some("2024-01-01T00:00:00Z".into()),
            architecture: spec.arch.to_string(),
            os: "linux".into(),
            config: ContainerConfig {
                labels: spec
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![layer_digest.clone()],
            },
            history: Vec::new(),
        };
        let config_bytes = serde_json::to_vec(&config)?;
        let (config_digest, _) = self.add_blob(&config_bytes)?;
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.into()),
            config: descriptor(MEDIA_TYPE_CONFIG, &config_digest, config_bytes.len()),
            layers: vec![descriptor(MEDIA_TYPE_LAYER_TAR, &layer_digest, tar.len())],
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let (manifest_digest, _) = self.add_blob(&manifest_bytes)?;
        if let Some(tag) = tag {
            self.tag(
                MEDIA_TYPE_MANIFEST,
                &manifest_digest,
                manifest_bytes.len(),
                tag,
            )?;
        }
        Ok(LayoutImage {
            manifest,
            manifest_digest,
            manifest_size: manifest_bytes.len() as u64,
            config,
            layer_file,
        })
    }

    /// Add an image index over `images` (platform `linux/<config arch>`), tagged `tag`.
    pub fn add_index(&mut self, tag: &str, images: &[LayoutImage]) -> Result<String> {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.into()),
            manifests: images
                .iter()
                .map(|i| Descriptor {
                    platform: Some(Platform {
                        architecture: i.config.architecture.clone(),
                        os: "linux".into(),
                        variant: None,
                    }),
                    ..descriptor(
                        MEDIA_TYPE_MANIFEST,
                        &i.manifest_digest,
                        i.manifest_size as usize,
                    )
                })
                .collect(),
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&index)?;
        let (digest, _) = self.add_blob(&bytes)?;
        self.tag(MEDIA_TYPE_INDEX, &digest, bytes.len(), tag)?;
        Ok(digest)
    }

    fn tag(&mut self, media_type: &str, digest: &str, size: usize, tag: &str) -> Result<()> {
        let mut d = descriptor(media_type, digest, size);
        d.annotations.insert(REF_NAME.into(), tag.into());
        self.index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        self.index.manifests.push(d);
        self.save()
    }

    fn save(&self) -> Result<()> {
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&self.index)?,
        )?;
        Ok(())
    }
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.into(),
        size: size as u64,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// An uncompressed, reproducible tar of `files`, staged under `work`.
fn tar_of(work: &Path, files: &[(&str, Vec<u8>)]) -> Result<Vec<u8>> {
    let stage = tempfile::Builder::new()
        .prefix("stage-")
        .tempdir_in(work)
        .context("staging layer files")?;
    let root = stage.path().join("root");
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&root))?;
        std::fs::write(&p, content)?;
    }
    std::fs::create_dir_all(&root)?;
    let out = stage.path().join("layer.tar");
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "--format=gnu",
            "-cf",
        ])
        .arg(&out)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar failed with {status}");
    }
    Ok(std::fs::read(&out)?)
}

/// `len` reproducible pseudo-random bytes (xorshift64*), so layers do not compress.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
