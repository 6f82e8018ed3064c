//! `/var`: extract the seed's `var` layer next to the stateroot's `var`, then exchange the two
//! (see the crash table in the [module docs](super)).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;
use rustix::fs::RenameFlags;

use super::fsops::{self, Kind};
use super::{Checkpoint, RestoreReport, Step, VAR_STAGING, counts, no_space, remove_leftovers};
use crate::archive::{ExtractOptions, OutsidePrefix, extract_staged};
use crate::oci::ImageManifest;
use crate::seed::fetch::layer_with_role;
use crate::seed::format::{PREFIX_VAR, ROLE_VAR};
use crate::seed::source::SeedSource;

const VAR: &str = "var";

pub(super) fn restore(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    stateroot_dir: &Path,
    cp: Checkpoint<'_>,
) -> Result<RestoreReport> {
    let layer = layer_with_role(manifest, ROLE_VAR)?;
    let var_path = stateroot_dir.join(VAR);
    let root = fsops::open_path(stateroot_dir)?;
    match fsops::lstat(&root, OsStr::new(VAR))
        .with_context(|| format!("stat {}", var_path.display()))?
    {
        Some(n) if n.kind == Kind::Dir => {}
        Some(n) => bail!(
            "{} is a {}, not a directory",
            var_path.display(),
            n.kind.describe()
        ),
        None => bail!(
            "{} does not exist (`ostree admin os-init` creates it)",
            var_path.display()
        ),
    }
    remove_leftovers(&root, stateroot_dir, VAR_STAGING, cp)?;

    tracing::info!(layer = %layer.digest, var = %var_path.display(), "restoring the seed's /var");
    cp(&Step::Extract)?;
    let opts = ExtractOptions {
        strip_prefix: Some(PathBuf::from(PREFIX_VAR)),
        outside_prefix: OutsidePrefix::Reject,
        allow_devices: false,
        // The seed's author controls the whole OS commit; program state in /var may carry them.
        allow_setid: true,
        ..ExtractOptions::default()
    };
    let extracted = src
        .open_layer(layer)
        .and_then(|reader| extract_staged(reader, &root, Path::new(VAR_STAGING), &opts))
        .with_context(|| {
            format!(
                "extracting the seed's var layer {} into {}",
                layer.digest,
                stateroot_dir.join(VAR_STAGING).display()
            )
        })
        .map_err(|e| no_space(e, &var_path, "/var"))?;

    let result = put_in_place(&root, &opts, cp);
    if result.is_err()
        && let Err(e) = fsops::remove_tree(&root, OsStr::new(VAR_STAGING))
    {
        tracing::warn!(
            "could not remove {}: {e}",
            stateroot_dir.join(VAR_STAGING).display()
        );
    }
    result
        .with_context(|| format!("putting the seed's /var in place at {}", var_path.display()))
        .map_err(|e| no_space(e, &var_path, "/var"))?;
    let report = counts(&extracted);
    tracing::info!(var = %var_path.display(), "restored /var: {}", report.summary());
    Ok(report)
}

/// Give the staged tree the metadata of `var`, exchange them, remove the old tree.
fn put_in_place(root: &Dir, opts: &ExtractOptions, cp: Checkpoint<'_>) -> Result<()> {
    let (var, staging) = (OsStr::new(VAR), OsStr::new(VAR_STAGING));
    cp(&Step::VarRootMetadata)?;
    let staged = fsops::open_dir(root, staging).context("opening the staged var")?;
    let current = fsops::open_dir(root, var).context("opening var")?;
    let meta = fsops::dir_meta(&current).context("reading the metadata of var")?;
    fsops::apply_dir_meta(&staged, &meta, opts.preserve_owner, opts.preserve_xattrs)
        .context("giving the staged var the metadata of var")?;
    fsops::sync_dir(&staged).context("syncing the staged var")?;
    drop((staged, current));

    cp(&Step::ExchangeVar)?;
    fsops::rename(root, staging, root, var, RenameFlags::EXCHANGE)
        .context("exchanging the staged var with var")?;
    fsops::sync_dir(root).context("syncing the stateroot directory")?;

    cp(&Step::RemoveOldVar)?;
    fsops::remove_tree(root, staging).context("removing the previous var")?;
    fsops::sync_dir(root).context("syncing the stateroot directory")?;
    Ok(())
}
