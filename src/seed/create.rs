//! `ibu seed create`: collect the seed's content, write it as an OCI image, deliver it.
//!
//! The image is built as an OCI image layout in a work directory (`/var/lib/ibu/seedgen` of the
//! seed host, left out of seeds) and then delivered: to a registry with
//! `skopeo copy --preserve-digests` (without it skopeo may recompress the uncompressed pack
//! layers and the range fetch of targets would break), or to `oci:DIR` / `oci-archive:FILE`.
//!
//! The seed host is left as it was: the only things written are the work directory, removed
//! when the run ends however it ends (a run killed outright leaves it behind, and the next run
//! removes it first), and the SeedGenerator status in `/var/lib/ibu/seedgen.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use cap_std::fs::Dir;

use super::collect::{self, Collected, Kind};
use super::format::*;
use super::pack::{Pack, write_packs};
use super::status::SeedGenRecorder;
use crate::archive::{Meta, TarBuilder};
use crate::facts::Live;
use crate::oci::layout::{Compression, LayoutWriter};
use crate::oci::{
    ContainerConfig, Descriptor, History, ImageConfig, ImageManifest, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST, RootFs,
};
use crate::paths::Paths;
use crate::spec::ImageRef;
use crate::status::store::Recorded;

/// Where the seed goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Registry(ImageRef),
    /// An OCI image layout directory (created; must not exist or be empty).
    OciDir(PathBuf),
    /// A tar of an OCI image layout, as skopeo's `oci-archive:` transport reads it.
    OciArchive(PathBuf),
}

impl Output {
    /// `oci:DIR`, `oci-archive:FILE`, or an image reference (optionally `docker://`).
    pub fn parse(s: &str) -> Result<Output> {
        if let Some(p) = s.strip_prefix("oci:") {
            return Ok(Output::OciDir(PathBuf::from(p)));
        }
        if let Some(p) = s.strip_prefix("oci-archive:") {
            return Ok(Output::OciArchive(PathBuf::from(p)));
        }
        Ok(Output::Registry(
            ImageRef::parse(s).map_err(|e| anyhow!("{e}"))?,
        ))
    }

    fn describe(&self) -> String {
        match self {
            Output::Registry(r) => r.to_string(),
            Output::OciDir(p) => format!("oci:{}", p.display()),
            Output::OciArchive(p) => format!("oci-archive:{}", p.display()),
        }
    }

    /// The layout's reference name (the tag, or `latest`).
    fn ref_name(&self) -> String {
        match self {
            Output::Registry(r) => r.tag.clone().unwrap_or_else(|| "latest".into()),
            _ => "latest".into(),
        }
    }
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub authfile: Option<PathBuf>,
    /// `Some(false)`: skip TLS verification (skopeo's `--dest-tls-verify=false`).
    pub tls_verify: Option<bool>,
    /// Extra CA certificates (skopeo's `--dest-cert-dir`).
    pub cert_dir: Option<PathBuf>,
}

/// What was made.
#[derive(Debug, Clone)]
pub struct Created {
    pub output: String,
    pub manifest_digest: String,
    pub info: SeedInfo,
    pub layers: usize,
    /// Bytes of all blobs (config and layers): what a full pull transfers.
    pub image_bytes: u64,
    pub warnings: Vec<String>,
    pub seconds: f64,
}

/// The work directory of seed creation (inside ibu's state directory, never in a seed).
pub fn workdir(paths: &Paths) -> PathBuf {
    paths.state_dir().join("seedgen")
}

/// Make a seed of the host at `paths` and deliver it to `output`.
pub fn create(paths: &Paths, output: &Output, push: &PushOptions) -> Result<Created> {
    let started = Instant::now();
    let _lock = crate::lock::InstanceLock::try_acquire(&paths.lock_file())?;
    let mut status =
        SeedGenRecorder::start(&paths.state_dir().join("seedgen.yaml"), &output.describe())?;
    let work = workdir(paths);
    // A run killed outright left its work directory behind; nothing in it is worth keeping.
    remove_dir_if_exists(&work)?;
    crate::fsutil::create_dir_all(&work, 0o700)?;
    let result = build_and_deliver(paths, output, push, &work, &mut status);
    let cleanup = remove_dir_if_exists(&work);
    match result {
        Ok(mut created) => {
            cleanup?;
            status.completed()?;
            created.seconds = started.elapsed().as_secs_f64();
            Ok(created)
        }
        Err(e) => {
            let _ = status.failed(&format!("{e:#}"));
            if let Err(c) = cleanup {
                tracing::warn!("{c:#}");
            }
            Err(e)
        }
    }
}

fn remove_dir_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

fn build_and_deliver(
    paths: &Paths,
    output: &Output,
    push: &PushOptions,
    work: &Path,
    status: &mut SeedGenRecorder,
) -> Result<Created> {
    status.in_progress("Collecting the seed's content")?;
    let recorded = Recorded::load(&paths.state_file())?;
    let facts = Live::new(paths);
    let collected = collect::collect(paths, &facts, &recorded, work)?;
    for w in &collected.warnings {
        tracing::warn!("{w}");
    }

    status.in_progress("Writing the seed image")?;
    let layout_dir = work.join("layout");
    let (manifest, manifest_desc) = write_image(&collected, &layout_dir, &output.ref_name())?;
    let image_bytes = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();

    status.in_progress(&format!(
        "Delivering the seed image to {}",
        output.describe()
    ))?;
    deliver(&layout_dir, &output.ref_name(), output, push)?;
    tracing::info!(
        output = %output.describe(),
        digest = %manifest_desc.digest,
        layers = manifest.layers.len(),
        bytes = image_bytes,
        "seed image created"
    );
    Ok(Created {
        output: output.describe(),
        manifest_digest: manifest_desc.digest,
        info: collected.info.clone(),
        layers: manifest.layers.len(),
        image_bytes,
        warnings: collected.warnings.clone(),
        seconds: 0.0,
    })
}

fn role(mut d: Descriptor, role: &str) -> Descriptor {
    d.annotations.insert(ANNOTATION_ROLE.into(), role.into());
    d
}

/// A gzip layer of explicit entries under `prefix`, read from `dir`.
fn tree_layer<'a>(
    layout: &LayoutWriter,
    dir: &Path,
    prefix: &str,
    entries: impl Iterator<Item = (&'a Path, Kind)>,
) -> Result<(Descriptor, String)> {
    let root = Dir::open_ambient_dir(dir, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", dir.display()))?;
    let mut tar = TarBuilder::new(layout.layer(Compression::Gzip)?);
    tar.append_dir(Path::new(prefix), &Meta::root(0o755))?;
    for (path, kind) in entries {
        if kind == Kind::Special {
            continue;
        }
        tar.append_path(&root, path, &Path::new(prefix).join(path))
            .with_context(|| format!("archiving {}", dir.join(path).display()))?;
    }
    let (w, _) = tar.finish()?;
    w.finish()
}

/// Write the seed as an OCI image layout at `dir`; returns the manifest and its descriptor.
pub fn write_image(
    c: &Collected,
    dir: &Path,
    ref_name: &str,
) -> Result<(ImageManifest, Descriptor)> {
    let layout = LayoutWriter::create(dir)?;

    // Packs first: their digests go into the index in the meta layer. Layers 0-2 are meta, etc
    // and var, so packs start at 3.
    let repo = Dir::open_ambient_dir(&c.ostree.repo, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", c.ostree.repo.display()))?;
    let packs: Vec<Pack> = write_packs(&layout, &repo, &c.ostree.objects, 3, PACK_TARGET_BYTES)?;
    tracing::info!(
        packs = packs.len(),
        objects = c.ostree.objects.len(),
        "ostree packs written"
    );

    let (etc, etc_id) = tree_layer(
        &layout,
        &c.etc_dir,
        PREFIX_ETC,
        c.etc.iter().map(|e| (e.path.as_path(), e.kind)),
    )?;
    let (var, var_id) = tree_layer(
        &layout,
        &c.var_dir,
        PREFIX_VAR,
        c.var.iter().map(|e| (e.path.as_path(), e.kind)),
    )?;

    let index = OstreeIndex {
        commit: c.info.ostree_commit.clone(),
        packs: packs.iter().map(|p| p.index.clone()).collect(),
    };
    let file = Meta::root(0o644);
    let mut tar = TarBuilder::new(layout.layer(Compression::Gzip)?);
    tar.append_dir(Path::new("seed"), &Meta::root(0o755))?;
    tar.append_bytes(
        Path::new(PATH_INFO),
        &file,
        &serde_json::to_vec_pretty(&c.info)?,
    )?;
    tar.append_bytes(
        Path::new(PATH_OSTREE_INDEX),
        &file,
        &serde_json::to_vec(&index)?,
    )?;
    tar.append_bytes(
        Path::new(PATH_CONTAINERS_LIST),
        &file,
        c.containers_list_file().as_bytes(),
    )?;
    tar.append_bytes(
        Path::new(PATH_ETC_DELETIONS),
        &file,
        c.etc_deletions_file()?.as_bytes(),
    )?;
    tar.append_bytes(Path::new(PATH_ORIGIN), &file, c.origin.as_bytes())?;
    let (w, _) = tar.finish()?;
    let (meta, meta_id) = w.finish()?;

    let mut layers = vec![
        role(meta, ROLE_META),
        role(etc, ROLE_ETC),
        role(var, ROLE_VAR),
    ];
    let mut diff_ids = vec![meta_id, etc_id, var_id];
    let mut history = vec![
        hist(
            &c.info,
            "seed metadata: info, ostree index, containers.list, etc.deletions, origin",
        ),
        hist(&c.info, "/etc changed from the commit's defaults"),
        hist(&c.info, "/var without excluded paths"),
    ];
    for p in packs {
        history.push(hist(
            &c.info,
            &format!("ostree objects ({} in this pack)", p.index.objects.len()),
        ));
        layers.push(p.descriptor);
        diff_ids.push(p.diff_id);
    }

    let labels = BTreeMap::from([
        (
            LABEL_FORMAT_VERSION.to_string(),
            SEED_FORMAT_VERSION.to_string(),
        ),
        (LABEL_SEED_INFO.to_string(), serde_json::to_string(&c.info)?),
    ]);
    let config = ImageConfig {
        created: Some(c.info.created.clone()),
        architecture: crate::oci::oci_arch(&c.info.architecture).to_string(),
        os: "linux".into(),
        config: ContainerConfig { labels },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history,
    };
    let config_desc = layout.add_json_blob(MEDIA_TYPE_CONFIG, &config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_MANIFEST.into()),
        config: config_desc,
        layers,
        annotations: BTreeMap::from([
            (
                "org.opencontainers.image.version".to_string(),
                c.info.version.clone(),
            ),
            (
                "org.opencontainers.image.created".to_string(),
                c.info.created.clone(),
            ),
        ]),
    };
    let desc = layout.finish(&manifest, ref_name)?;
    Ok((manifest, desc))
}

fn hist(info: &SeedInfo, what: &str) -> History {
    History {
        created: Some(info.created.clone()),
        created_by: Some(format!("ibu seed create ({} {})", info.agent_version, what)),
        comment: None,
    }
}

/// Move or copy the finished layout to where it was asked for.
fn deliver(layout: &Path, ref_name: &str, output: &Output, push: &PushOptions) -> Result<()> {
    match output {
        Output::OciDir(dest) => {
            if dest.exists() && std::fs::read_dir(dest)?.next().is_some() {
                bail!("{} exists and is not empty", dest.display());
            }
            let _ = std::fs::remove_dir(dest);
            if std::fs::rename(layout, dest).is_err() {
                // Another filesystem: copy with the layout writer's guarantees via the archive.
                crate::fsutil::create_dir_all(dest, 0o755)?;
                copy_tree(layout, dest)?;
            }
            Ok(())
        }
        Output::OciArchive(file) => crate::oci::oci_archive::write(layout, file),
        Output::Registry(image) => skopeo_push(layout, ref_name, image, push),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let sh = xshell::Shell::new()?;
    let (a, b) = (from.join("."), to.to_path_buf());
    xshell::cmd!(sh, "cp -a {a} {b}")
        .quiet()
        .run()
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// `skopeo copy --preserve-digests oci:LAYOUT:REF docker://IMAGE`.
fn skopeo_push(layout: &Path, ref_name: &str, image: &ImageRef, push: &PushOptions) -> Result<()> {
    let sh = xshell::Shell::new()?;
    let src = format!("oci:{}:{ref_name}", layout.display());
    let dest = format!("docker://{}", image.pull_spec());
    let mut args: Vec<String> = vec!["copy".into(), "--preserve-digests".into(), "--quiet".into()];
    if let Some(a) = &push.authfile {
        args.push(format!("--authfile={}", a.display()));
    }
    if let Some(v) = push.tls_verify {
        args.push(format!("--dest-tls-verify={v}"));
    }
    if let Some(c) = &push.cert_dir {
        args.push(format!("--dest-cert-dir={}", c.display()));
    }
    args.push(src);
    args.push(dest.clone());
    let out = xshell::cmd!(sh, "skopeo {args...}")
        .quiet()
        .ignore_status()
        .output()
        .context("running skopeo (is it installed?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let hint = if err.contains("unauthorized") || err.contains("authentication required") {
            " (wrong user name or password in the authfile?)"
        } else {
            ""
        };
        bail!("pushing the seed to {}: {err}{hint}", image);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs() {
        assert_eq!(
            Output::parse("oci:/tmp/x").unwrap(),
            Output::OciDir("/tmp/x".into())
        );
        assert_eq!(
            Output::parse("oci-archive:/tmp/x.tar").unwrap(),
            Output::OciArchive("/tmp/x.tar".into())
        );
        let r = Output::parse("docker://127.0.0.1:5000/seeds/node:1.1.0").unwrap();
        assert_eq!(r.ref_name(), "1.1.0");
        assert!(Output::parse("Not A Ref").is_err());
    }
}
