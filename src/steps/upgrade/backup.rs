//! `Backup` (before the pivot) and `RestoreBackups` (after it). What a backup is:
//! [`crate::backup`].
//!
//! Layout in the new stateroot: `<workspace>/backup/<wave>/<id>/` holds `paths/<n>` (a copy of
//! the n-th path, metadata kept), `volumes/<name>.tar` (`podman volume export`) and
//! `done` once complete; a rerun redoes an incomplete backup from scratch and skips complete
//! ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{NewRoot, copy_entry, inside, remove_if_exists, workspace_in};
use crate::backup::{self, NodeBackup};
use crate::images::podman::Podman;
use crate::paths::Paths;
use crate::plan::Outcome;
use crate::steps::Env;

fn root(var: &Path) -> PathBuf {
    workspace_in(var).join("backup")
}

fn backups(env: &Env<'_>) -> Result<Vec<NodeBackup>> {
    let dir = env.paths.config_dir();
    let mut cms = Vec::new();
    for r in &env.desired.oadp_content {
        cms.push(crate::spec::refs::config_map(&dir, r).map_err(anyhow::Error::new)?);
    }
    backup::collect(&cms)
}

/// A node path (`/var/...` or `/etc/...`) in the tree of `paths`.
fn live(paths: &Paths, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    match (path.strip_prefix("/var"), path.strip_prefix("/etc")) {
        (Ok(r), _) => inside(&paths.var, r),
        (_, Ok(r)) => inside(&paths.etc, r),
        _ => anyhow::bail!("{p}: not under /var or /etc"),
    }
}

pub fn backup(env: &Env<'_>, new: &NewRoot) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    let list = backups(env)?;
    let mut counts = (0usize, 0usize, 0usize);
    for b in &list {
        let dir = root(&new.var).join(b.dir());
        if dir.join("done").exists() {
            continue;
        }
        remove_if_exists(&dir)?;
        crate::fsutil::create_dir_all(&dir.join("paths"), 0o700)?;
        for (i, p) in b.paths.iter().enumerate() {
            let src = live(env.paths, p)?;
            if std::fs::symlink_metadata(&src).is_err() {
                // Nothing there now: nothing to restore either (recorded as absent).
                crate::fsutil::write_atomic(
                    &dir.join(format!("paths/{i}.absent")),
                    p.as_bytes(),
                    0o600,
                )?;
                continue;
            }
            copy_entry(&src, &dir.join(format!("paths/{i}")))
                .with_context(|| format!("backing up {p} ({})", b.id))?;
            counts.0 += 1;
        }
        if !b.podman_volumes.is_empty() {
            let podman = Podman::new(env.paths)?;
            crate::fsutil::create_dir_all(&dir.join("volumes"), 0o700)?;
            for v in &b.podman_volumes {
                let tar = dir.join(format!("volumes/{v}.tar"));
                let tar_s = tar.to_string_lossy().into_owned();
                podman
                    .run(&["volume", "export", "--output", &tar_s, v])
                    .with_context(|| format!("backing up podman volume {v} ({})", b.id))?;
                counts.1 += 1;
            }
        }
        crate::fsutil::write_atomic(&dir.join("done"), b"", 0o600)?;
        counts.2 += 1;
    }
    Ok(Outcome::Succeeded {
        message: format!(
            "backed up {} NodeBackups ({} paths, {} podman volumes) into stateroot {}",
            list.len(),
            counts.0,
            counts.1,
            new.stateroot
        ),
    })
}

pub fn restore(env: &Env<'_>) -> Result<Outcome> {
    let list = backups(env)?;
    let base = root(&env.paths.var);
    let mut restored = 0usize;
    for b in &list {
        let dir = base.join(b.dir());
        if !dir.join("done").exists() {
            anyhow::bail!(
                "backup {} is incomplete or missing in {}",
                b.id,
                dir.display()
            );
        }
        for (i, p) in b.paths.iter().enumerate() {
            let saved = dir.join(format!("paths/{i}"));
            if !saved.exists() && std::fs::symlink_metadata(&saved).is_err() {
                continue;
            }
            let dst = live(env.paths, p)?;
            // Replace, as a restore does: what the seed has there gives way to the backup.
            remove_if_exists(&dst)?;
            copy_entry(&saved, &dst).with_context(|| format!("restoring {p} ({})", b.id))?;
            restored += 1;
        }
        if !b.podman_volumes.is_empty() {
            let podman = Podman::new(env.paths)?;
            for v in &b.podman_volumes {
                let tar = dir
                    .join(format!("volumes/{v}.tar"))
                    .to_string_lossy()
                    .into_owned();
                if podman.run(&["volume", "exists", v]).is_err() {
                    podman
                        .run(&["volume", "create", v])
                        .with_context(|| format!("creating podman volume {v}"))?;
                }
                podman
                    .run(&["volume", "import", v, &tar])
                    .with_context(|| format!("restoring podman volume {v} ({})", b.id))?;
                restored += 1;
            }
        }
    }
    Ok(Outcome::Succeeded {
        message: format!(
            "restored {restored} paths and volumes of {} NodeBackups",
            list.len()
        ),
    })
}
