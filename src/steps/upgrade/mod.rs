//! Executors of the Upgrade and Rollback steps: thin, each doing what its step names.
//!
//! Before the pivot they write into the new stateroot (its deployment's `etc` and its `var`,
//! both plain directories under `/sysroot/ostree/deploy/<stateroot>` that nothing runs from
//! yet); after it, into the booted system's `/etc` and `/var`. Copies go through `cp -aT
//! --remove-destination` (owner, mode, times, xattrs — SELinux labels, capabilities — kept; a
//! symlink at the destination is replaced, never written through), into parents that are
//! checked to contain no symlink, so nothing lands outside the stateroot.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Env;
use crate::stateroot;
use crate::status::store::DeploymentRecord;

pub mod backup;
pub mod crypto;
pub mod health;
pub mod identity;
pub mod manifests;
pub mod pivot;

/// The new stateroot, seen from the old one before the pivot.
#[derive(Debug, Clone)]
pub struct NewRoot {
    pub stateroot: String,
    /// The deployment's `etc`.
    pub etc: PathBuf,
    /// The stateroot's `var`.
    pub var: PathBuf,
    /// The deployment's root.
    pub deployment: PathBuf,
}

pub fn new_root(env: &Env<'_>, stateroot_name: &str, d: &DeploymentRecord) -> NewRoot {
    let deployment = stateroot::deployment_dir(env.paths, stateroot_name, d);
    NewRoot {
        stateroot: stateroot_name.to_string(),
        etc: deployment.join("etc"),
        var: stateroot::stateroot_dir(env.paths, stateroot_name).join("var"),
        deployment,
    }
}

/// ibu's workspace in a stateroot whose `/var` is `var`.
pub fn workspace_in(var: &Path) -> PathBuf {
    var.join("lib/ibu/workspace")
}

/// `root/rel`, after checking that no existing component of it below `root` is a symlink (so
/// a write there cannot leave `root`). `rel` must be relative with normal components.
pub fn inside(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut p = root.to_path_buf();
    let comps: Vec<Component<'_>> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(n) = c else {
            bail!("{}: only plain relative paths are allowed", rel.display());
        };
        p.push(n);
        let last = i + 1 == comps.len();
        if !last
            && let Ok(md) = std::fs::symlink_metadata(&p)
            && md.file_type().is_symlink()
        {
            bail!("{} is a symlink: refusing to write below it", p.display());
        }
    }
    Ok(p)
}

/// Copy `src` (file, symlink or directory) to `dst` like `cp -aT --remove-destination`,
/// creating `dst`'s parents (mode 0755).
pub fn copy_entry(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        crate::fsutil::create_dir_all(parent, 0o755)?;
    }
    let out = Command::new("cp")
        .args(["-aT", "--remove-destination"])
        .arg(src)
        .arg(dst)
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "copying {} to {}: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Run a command; its stdout, or an error naming it with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Remove a file or a whole tree if it exists.
pub fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("stat {}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_refuses_symlinked_parents() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::os::unix::fs::symlink("/tmp", d.path().join("link")).unwrap();
        assert_eq!(
            inside(d.path(), Path::new("a/b")).unwrap(),
            d.path().join("a/b")
        );
        assert!(inside(d.path(), Path::new("link/x")).is_err());
        assert!(inside(d.path(), Path::new("../x")).is_err());
        // The last component may be a symlink: it is replaced, not followed.
        assert!(inside(d.path(), Path::new("link")).is_ok());
    }

    #[test]
    fn copy_replaces_a_symlink_at_the_destination() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        std::fs::write(d.path().join("src"), b"new").unwrap();
        let dst = d.path().join("root/f");
        std::fs::create_dir(d.path().join("root")).unwrap();
        std::os::unix::fs::symlink(&outside, &dst).unwrap();
        copy_entry(&d.path().join("src"), &dst).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert_eq!(std::fs::read(&dst).unwrap(), b"new");
        assert!(
            !std::fs::symlink_metadata(&dst)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
