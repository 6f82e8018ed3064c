//! ostree facts through libostree: the deployments, the stateroots, the running OS and what it
//! occupies on disk.
//!
//! Everything comes from libostree (the `ostree` crate), never from parsing `ostree admin
//! status`, so ibu sees exactly what the bootloader writer sees: the deployment list in boot
//! order, each deployment's boot entry (kernel arguments, kernel, initramfs) and origin.
//!
//! Which deployment is booted is libostree's answer on a host. A directory sysroot
//! (`--sysroot DIR`) has no booted deployment, so there the **sandbox file** names it (see
//! [`crate::paths::Sandbox`]); a sandbox file naming no existing deployment is an error rather
//! than "nothing booted", because every decision the planner makes hangs on the booted one.
//!
//! Stateroots are read from the directory `ostree/deploy/`, not from the deployments: a failed
//! Prep leaves a stateroot with no deployment (or a deployment that was undeployed) behind, and
//! the planner must see such leftovers to clean them up or to reuse the name.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ostree::glib;

use super::{DeploymentFacts, Footprint, OstreeFacts};
use crate::paths::Paths;

/// Read the sysroot at `paths.sysroot`: deployments in boot order, stateroots, the OS id.
pub fn gather(paths: &Paths) -> Result<OstreeFacts> {
    let root = &paths.sysroot;
    let sysroot = crate::sysroot::open(paths)?;
    let repo = sysroot.repo();
    let booted_deployment = crate::sysroot::booted_deployment(paths, &sysroot);

    let mut deployments = Vec::new();
    for (position, d) in sysroot.deployments().iter().enumerate() {
        let stateroot = d.osname().to_string();
        let checksum = d.csum().to_string();
        let serial = d.deployserial();
        let what = format!("deployment {stateroot} {checksum}.{serial}");
        let version = commit_version(&repo, &checksum)
            .with_context(|| format!("{what} in sysroot {}", root.display()))?;
        let bootconfig = d.bootconfig();
        let kargs = bootconfig
            .as_ref()
            .and_then(|b| b.get("options"))
            .map(|s| s.to_string())
            .unwrap_or_default();
        let refspec = d
            .origin()
            .and_then(|o| o.string("origin", "refspec").ok())
            .map(|s| s.to_string());
        let booted = booted_deployment.as_ref().is_some_and(|b| b.equal(d));
        deployments.push(DeploymentFacts {
            // libostree numbers the list it loaded; the position is the same number, and the
            // one the boot order means.
            index: position,
            stateroot,
            checksum,
            serial,
            version,
            pinned: d.is_pinned(),
            staged: d.is_staged(),
            booted,
            default: position == 0,
            kargs,
            refspec,
        });
    }

    if let Some(s) = &paths.sandbox
        && !deployments.iter().any(|d| d.booted)
    {
        let b = &s.booted;
        bail!(
            "sandbox file {} names {} {}.{} as booted, but sysroot {} has no such deployment \
             (deployments: {})",
            root.join(crate::paths::SANDBOX_FILE).display(),
            b.stateroot,
            b.checksum,
            b.serial,
            root.display(),
            list_deployments(&deployments)
        );
    }

    let stateroots = list_stateroots(root)?;
    let os_id = match deployments.iter().find(|d| d.booted) {
        Some(b) => os_release_id(&deployment_dir(root, b))?,
        None => None,
    };
    Ok(OstreeFacts {
        deployments,
        stateroots,
        os_id,
    })
}

/// What the booted deployment occupies: the basis of the free-space estimate for a new stateroot.
///
/// A new stateroot deployed from a seed of the same OS holds a tree of about the same size, and
/// its kernel and initramfs land in `/boot`, so the booted deployment's bytes tell how much room
/// Prep needs on the sysroot and on `/boot` before it starts.
///
/// - `deployment_bytes`: every inode of the booted deployment's tree, counted once (a deployment
///   is mostly hardlinks into the repo, and a file with several names in the tree must not count
///   twice), as allocated space (`st_blocks * 512`), without crossing into other filesystems.
/// - `boot_bytes`: the kernel and initramfs files of its boot entry (`linux`, `initrd` and any
///   overlay initrds), relative to `/boot`.
pub fn footprint(paths: &Paths, facts: &OstreeFacts) -> Result<Footprint> {
    let booted = facts.booted().with_context(|| {
        format!(
            "measuring the running OS: no booted deployment in sysroot {}",
            paths.sysroot.display()
        )
    })?;
    let dir = deployment_dir(&paths.sysroot, booted);
    let deployment_bytes =
        tree_bytes(&dir).with_context(|| format!("measuring deployment {}", dir.display()))?;

    let sysroot = crate::sysroot::open(paths)?;
    let deployment = crate::sysroot::booted_deployment(paths, &sysroot).with_context(|| {
        format!(
            "booted deployment {} {} vanished from sysroot {}",
            booted.stateroot,
            booted.dirname(),
            paths.sysroot.display()
        )
    })?;
    let bootconfig = deployment.bootconfig().with_context(|| {
        format!(
            "deployment {} {} has no boot entry",
            booted.stateroot,
            booted.dirname()
        )
    })?;
    let mut files: Vec<String> = ["linux", "initrd"]
        .iter()
        .filter_map(|k| bootconfig.get(k).map(|v| v.to_string()))
        .collect();
    files.extend(bootconfig.overlay_initrds().iter().map(|s| s.to_string()));
    let mut boot_bytes = 0u64;
    for f in &files {
        let p = boot_file(&paths.boot, f);
        let md = std::fs::metadata(&p).with_context(|| {
            format!(
                "boot file {} of deployment {} {}",
                p.display(),
                booted.stateroot,
                booted.dirname()
            )
        })?;
        boot_bytes = boot_bytes.saturating_add(md.blocks().saturating_mul(512));
    }
    Ok(Footprint {
        deployment_bytes,
        boot_bytes,
    })
}

/// The `version` metadata string of a commit, if the commit has one.
fn commit_version(repo: &ostree::Repo, checksum: &str) -> Result<Option<String>> {
    let (commit, _state) = repo
        .load_commit(checksum)
        .with_context(|| format!("loading commit {checksum}"))?;
    let metadata = glib::VariantDict::new(Some(&commit.child_value(0)));
    metadata
        .lookup::<String>("version")
        .map_err(|e| anyhow!("commit {checksum}: metadata \"version\" is not a string: {e}"))
}

fn list_deployments(deployments: &[DeploymentFacts]) -> String {
    if deployments.is_empty() {
        return "none".into();
    }
    deployments
        .iter()
        .map(|d| format!("{} {}", d.stateroot, d.dirname()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Directories under `ostree/deploy/`, sorted.
fn list_stateroots(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("ostree/deploy");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .with_context(|| format!("listing stateroots in {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("listing stateroots in {}", dir.display()))?;
        let is_dir = entry
            .file_type()
            .with_context(|| format!("stateroot {}", entry.path().display()))?
            .is_dir();
        if is_dir {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// `ostree/deploy/<stateroot>/deploy/<checksum>.<serial>` under the sysroot.
fn deployment_dir(root: &Path, d: &DeploymentFacts) -> PathBuf {
    root.join("ostree/deploy")
        .join(&d.stateroot)
        .join("deploy")
        .join(d.dirname())
}

/// `ID` of a deployment's os-release: `usr/lib/os-release`, else `etc/os-release`.
fn os_release_id(deployment: &Path) -> Result<Option<String>> {
    for rel in ["usr/lib/os-release", "etc/os-release"] {
        let p = deployment.join(rel);
        match std::fs::read_to_string(&p) {
            Ok(text) => return Ok(parse_os_release_id(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
    Ok(None)
}

/// `ID=` of an os-release file (shell-style quoting removed), `None` if absent or empty.
fn parse_os_release_id(text: &str) -> Option<String> {
    let mut id = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID=") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            id = (!v.is_empty()).then(|| v.to_string());
        }
    }
    id
}

/// A boot entry path (`/ostree/<os>-<bootcsum>/vmlinuz-..`) is relative to the boot filesystem.
/// With `sysroot.bootprefix` set it starts with `/boot/` and is relative to the sysroot instead;
/// `/boot/boot` is a link to `.` on ostree systems, so both resolve under `boot`, but prefer the
/// stripped form when the literal one does not exist.
fn boot_file(boot: &Path, entry: &str) -> PathBuf {
    let rel = entry.trim_start_matches('/');
    let direct = boot.join(rel);
    if !direct.exists()
        && let Some(stripped) = rel.strip_prefix("boot/")
    {
        return boot.join(stripped);
    }
    direct
}

/// Allocated bytes of every inode under `top` (each counted once), staying on `top`'s filesystem.
fn tree_bytes(top: &Path) -> Result<u64> {
    let md = std::fs::symlink_metadata(top).with_context(|| format!("{}", top.display()))?;
    let dev = md.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    seen.insert(md.ino());
    let mut total = md.blocks().saturating_mul(512);
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?;
            if md.dev() != dev {
                // A mount point inside the tree: its own filesystem, not the deployment's.
                continue;
            }
            if !seen.insert(md.ino()) {
                continue;
            }
            total = total.saturating_add(md.blocks().saturating_mul(512));
            if md.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_id_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("ID=debian\nVERSION_ID=12\n", Some("debian")),
            ("NAME=\"Red Hat\"\nID=\"rhcos\"\n", Some("rhcos")),
            ("ID='fedora'\n", Some("fedora")),
            ("  ID=debian  \n", Some("debian")),
            ("ID_LIKE=debian\n", None),
            ("ID=\n", None),
            ("ID=a\nID=b\n", Some("b")),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_os_release_id(text).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn tree_bytes_counts_hardlinks_once() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("a"), vec![7u8; 64 * 1024]).unwrap();
        let once = tree_bytes(d.path()).unwrap();
        std::fs::hard_link(sub.join("a"), d.path().join("b")).unwrap();
        assert_eq!(tree_bytes(d.path()).unwrap(), once);
        let file = std::fs::metadata(sub.join("a")).unwrap().blocks() * 512;
        assert!(file >= 64 * 1024, "{file}");
        assert!(once >= file, "{once} < {file}");
    }

    #[test]
    fn boot_file_strips_boot_prefix_only_when_needed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ostree/os-1")).unwrap();
        std::fs::write(d.path().join("ostree/os-1/vmlinuz"), b"k").unwrap();
        assert_eq!(
            boot_file(d.path(), "/ostree/os-1/vmlinuz"),
            d.path().join("ostree/os-1/vmlinuz")
        );
        assert_eq!(
            boot_file(d.path(), "/boot/ostree/os-1/vmlinuz"),
            d.path().join("ostree/os-1/vmlinuz")
        );
    }
}
