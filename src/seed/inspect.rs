//! `ibu seed inspect`: a seed's info and whether it suits this host, from its config alone.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use super::compat::{self, Host};
use super::format::SeedInfo;
use super::source::{LayoutSource, RegistrySource, SeedSource};
use crate::checks::CheckOutcome;
use crate::facts::{Live, Observe};
use crate::oci::layout::LayoutReader;
use crate::paths::Paths;
use crate::registry::{Client, ClientOptions};
use crate::spec::ImageRef;
use crate::status::CheckResult;

/// Open a seed given as an image reference, `oci:DIR[:REF]` or `oci-archive:FILE` (unpacked
/// into `scratch`, which the caller owns).
pub fn open_source(
    spec: &str,
    opts: &ClientOptions,
    scratch: &std::path::Path,
) -> Result<Box<dyn SeedSource>> {
    if let Some(rest) = spec.strip_prefix("oci:") {
        let (dir, ref_name) = match rest.rsplit_once(':') {
            Some((d, r)) if !r.contains('/') => (d, Some(r.to_string())),
            _ => (rest, None),
        };
        let path = PathBuf::from(dir);
        let reader = LayoutReader::open(&path)?;
        return Ok(Box::new(LayoutSource {
            reader,
            ref_name,
            path,
        }));
    }
    if let Some(file) = spec.strip_prefix("oci-archive:") {
        let dest = scratch.join("oci-archive");
        let (reader, _) = crate::oci::oci_archive::unpack(std::path::Path::new(file), &dest)
            .with_context(|| format!("unpacking {file}"))?;
        return Ok(Box::new(LayoutSource {
            reader,
            ref_name: None,
            path: PathBuf::from(file),
        }));
    }
    let image = ImageRef::parse(spec).map_err(|e| anyhow!("{e}"))?;
    let client = Client::new(&image, opts)?;
    Ok(Box::new(RegistrySource {
        client,
        reference: spec.to_string(),
    }))
}

/// A check as printed and serialized.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    pub name: &'static str,
    pub result: CheckResult,
    pub message: String,
}

/// What `ibu seed inspect` reports.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub image: String,
    pub manifest_digest: String,
    pub layers: usize,
    pub image_bytes: u64,
    pub info: Option<SeedInfo>,
    pub compatible: bool,
    pub checks: Vec<CheckLine>,
    /// Bytes transferred to find all this out.
    pub bytes_downloaded: u64,
}

/// Read the seed's labels and check them against this host. `desired_version`, when given,
/// must be the seed's version.
pub fn inspect(
    paths: &Paths,
    src: &dyn SeedSource,
    desired_version: Option<&str>,
) -> Result<Inspection> {
    let (manifest, digest) = src.manifest()?;
    let config = src.config(&manifest)?;
    let facts = Live::new(paths);
    let ostree = facts.ostree()?;
    let host = Host {
        host: facts.host()?,
        storage: facts.storage()?,
        running_version: ostree.running_version(),
        missing_images_bytes: None,
    };
    let (info, checks) = compat::check(&config.config.labels, desired_version, &host);
    let compatible = !checks.iter().any(CheckOutcome::is_failed);
    Ok(Inspection {
        image: src.describe(),
        manifest_digest: digest,
        layers: manifest.layers.len(),
        image_bytes: manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
        info,
        compatible,
        checks: checks
            .into_iter()
            .map(|c| CheckLine {
                name: c.name,
                result: c.result,
                message: c.message,
            })
            .collect(),
        bytes_downloaded: src.bytes_downloaded(),
    })
}

/// The human rendering of an inspection.
pub fn render(i: &Inspection) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "Seed:      {}", i.image);
    let _ = writeln!(o, "Digest:    {}", i.manifest_digest);
    let _ = writeln!(
        o,
        "Size:      {} in {} layers",
        crate::humanize::bytes(i.image_bytes),
        i.layers
    );
    if let Some(s) = &i.info {
        let _ = writeln!(
            o,
            "Version:   {} ({}, {})",
            s.version, s.os_id, s.architecture
        );
        let _ = writeln!(o, "Commit:    {}", s.ostree_commit);
        let _ = writeln!(
            o,
            "Made by:   ibu {} on {} at {}",
            s.agent_version, s.sno_hostname, s.created
        );
        let _ = writeln!(
            o,
            "Content:   {} ostree objects ({}), /etc {}, /var {}, {} images ({})",
            s.sizes.ostree_objects,
            crate::humanize::bytes(s.sizes.ostree_archive_bytes),
            crate::humanize::bytes(s.sizes.etc_bytes),
            crate::humanize::bytes(s.sizes.var_bytes),
            s.images,
            crate::humanize::bytes(s.sizes.images_bytes)
        );
        let _ = writeln!(o, "Kernel:    {}", s.kernel_args.join(" "));
    }
    let _ = writeln!(
        o,
        "\nCompatibility with this host: {}",
        if i.compatible { "yes" } else { "NO" }
    );
    for c in &i.checks {
        let mark = crate::render::mark(c.result);
        let _ = writeln!(o, "  [{mark}] {:<22} {}", c.name, c.message);
    }
    let _ = writeln!(
        o,
        "\n(read {} from the source; nothing was pulled)",
        crate::humanize::bytes(i.bytes_downloaded)
    );
    o
}
