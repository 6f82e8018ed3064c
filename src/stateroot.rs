//! Changes to stateroots: what abort and finalize remove (and, later, what Prep creates).
//!
//! Cleanup follows LCA's `CleanupUnbootedStateroots` but through libostree directly: drop every
//! deployment of another stateroot from the deployment list and write it (the booted deployment
//! is never touched, and a refusal is an error, not a skip), let libostree prune the repository
//! and the now unreferenced deployment directories, then delete the leftover stateroot
//! directories (a half-made Prep can leave one with no deployment) and ibu's own refs.

use anyhow::{Context, Result, bail};
use ostree::gio;

use crate::paths::Paths;
use crate::status::store::DeploymentRecord;
use crate::sysroot;

/// Prefix of every ref ibu creates in the ostree repository (`ibu/<stateroot>`).
pub const REF_PREFIX: &str = "ibu";

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub undeployed: Vec<String>,
    pub removed_stateroots: Vec<String>,
    pub removed_refs: Vec<String>,
    /// Problems that did not stop the rest of the cleanup.
    pub errors: Vec<String>,
}

impl CleanupReport {
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "removed stateroots: {}; undeployed: {}",
            list(&self.removed_stateroots),
            list(&self.undeployed)
        )
    }
}

/// Remove every stateroot except `keep`, which must be the booted one. Tries everything and
/// reports all failures rather than stopping at the first (like LCA's cleanup).
pub fn remove_all_except(paths: &Paths, keep: &str) -> Result<CleanupReport> {
    let w = sysroot::open_writable(paths)?;
    let sr = &w.sysroot;
    let booted = sysroot::booted_deployment(paths, sr)
        .context("no booted deployment found: refusing to remove stateroots")?;
    if booted.osname() != keep {
        bail!(
            "refusing to clean up: the booted stateroot is {:?}, not {keep:?}",
            booted.osname().as_str()
        );
    }
    let mut report = CleanupReport::default();

    let all = sr.deployments();
    let (kept, dropped): (Vec<_>, Vec<_>) = all.into_iter().partition(|d| d.osname() == keep);
    if !dropped.is_empty() {
        for d in &dropped {
            report
                .undeployed
                .push(format!("{} {}.{}", d.osname(), d.csum(), d.deployserial()));
        }
        // The cleanup below prunes once, after the refs are gone too.
        sr.write_deployments_with_options(&kept, &without_postclean(), gio::Cancellable::NONE)
            .context("writing the deployment list without the other stateroots")?;
    }

    let repo = sr.repo();
    let refs = repo
        .list_refs(Some(REF_PREFIX), gio::Cancellable::NONE)
        .context("listing ibu's refs")?;
    for name in refs.keys() {
        // list_refs with a prefix returns names relative to it.
        let full = format!("{REF_PREFIX}/{name}");
        if name.as_str() == keep {
            continue;
        }
        match repo.set_ref_immediate(None, &full, None, gio::Cancellable::NONE) {
            Ok(()) => report.removed_refs.push(full),
            Err(e) => report
                .errors
                .push(format!("failed to delete ref {full}: {e}")),
        }
    }

    // Prunes the repo and removes deployment directories nothing references any more.
    if let Err(e) = sr.cleanup(gio::Cancellable::NONE) {
        report.errors.push(format!("ostree cleanup failed: {e}"));
    }

    let deploy_dir = paths.sysroot.join("ostree/deploy");
    let entries = std::fs::read_dir(&deploy_dir)
        .with_context(|| format!("listing {}", deploy_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", deploy_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == keep || !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => report.removed_stateroots.push(name),
            Err(e) => report
                .errors
                .push(format!("failed to remove stateroot {name}: {e}")),
        }
    }
    crate::fsutil::sync_dir(&deploy_dir)?;

    let ws = paths.workspace();
    if ws.exists()
        && let Err(e) = std::fs::remove_dir_all(&ws)
    {
        report
            .errors
            .push(format!("removing {} failed: {e}", ws.display()));
    }
    Ok(report)
}

/// `ostree/deploy/<stateroot>` of the sysroot.
pub fn stateroot_dir(paths: &Paths, stateroot: &str) -> std::path::PathBuf {
    paths.sysroot.join("ostree/deploy").join(stateroot)
}

/// `ostree/deploy/<stateroot>/deploy/<checksum>.<serial>`.
pub fn deployment_dir(paths: &Paths, stateroot: &str, d: &DeploymentRecord) -> std::path::PathBuf {
    stateroot_dir(paths, stateroot)
        .join("deploy")
        .join(format!("{}.{}", d.checksum, d.serial))
}

/// Create stateroot `stateroot` (`os-init`) and deploy `commit` there with `kargs` and the seed's
/// `origin`, **not as the default**: the running deployment and the boot order stay as they are
/// (`ostree admin deploy --not-as-default --retain`). Idempotent: a deployment of `commit` in
/// `stateroot` carrying the same `ibu=` argument (a crash after the write) is returned as is; a
/// half-made deployment directory from a crash before the write is pruned by the write.
pub fn deploy_new(
    paths: &Paths,
    stateroot: &str,
    commit: &str,
    origin: &str,
    kargs: &[String],
) -> Result<DeploymentRecord> {
    let w = sysroot::open_writable(paths)?;
    let sr = &w.sysroot;
    let ibu_karg = kargs.iter().find(|k| k.starts_with("ibu="));
    for d in sr.deployments() {
        let options = d
            .bootconfig()
            .and_then(|b| b.get("options"))
            .map(|o| o.to_string())
            .unwrap_or_default();
        let same_karg = ibu_karg.is_none_or(|k| options.split_whitespace().any(|o| o == k));
        if d.osname() == stateroot && d.csum() == commit && same_karg {
            return Ok(DeploymentRecord {
                checksum: d.csum().to_string(),
                serial: d.deployserial(),
            });
        }
    }
    if !stateroot_dir(paths, stateroot).exists() {
        sr.init_osname(stateroot, gio::Cancellable::NONE)
            .with_context(|| format!("creating stateroot {stateroot} (ostree admin os-init)"))?;
    }
    let keyfile = ostree::glib::KeyFile::new();
    keyfile
        .load_from_data(origin, ostree::glib::KeyFileFlags::KEEP_COMMENTS)
        .context("reading the seed's .origin")?;
    let kargs: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let d = sr
        .deploy_tree(
            Some(stateroot),
            commit,
            Some(&keyfile),
            None,
            &kargs,
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("deploying commit {commit} in stateroot {stateroot}"))?;
    sr.simple_write_deployment(
        Some(stateroot),
        &d,
        None,
        ostree::SysrootSimpleWriteDeploymentFlags::NOT_DEFAULT
            | ostree::SysrootSimpleWriteDeploymentFlags::RETAIN,
        gio::Cancellable::NONE,
    )
    .with_context(|| {
        format!("adding the new deployment of {stateroot} to the boot menu (not as default)")
    })?;
    Ok(DeploymentRecord {
        checksum: d.csum().to_string(),
        serial: d.deployserial(),
    })
}

/// Options for `write_deployments` without ostree's post-clean. `ostree_sysroot_write_deployments`
/// cleans up after itself, and that cleanup prunes the repository: it walks every object of every
/// deployed commit — two whole OS trees while both stateroots are deployed. Reordering frees
/// nothing to prune (only the previous boot version's loader files, which any later cleanup or
/// boot-version swap replaces), so ibu skips it where it only reorders or prunes itself. In the
/// VM the post-clean was 18 s of CPU in `CommitPivot`, right after the pivot reboot: most of
/// the upgrade's downtime beyond a plain reboot (benches/RESULTS.md, upgrade-downtime).
fn without_postclean() -> ostree::SysrootWriteDeploymentsOpts {
    ostree::SysrootWriteDeploymentsOpts {
        do_postclean: false,
    }
}

/// Make the deployment `d` of `stateroot` the first in the boot order, keeping every other
/// deployment in its order (ostree has no "default" pointer: index 0 is what boots next).
/// Returns whether anything changed; a deployment already first is left alone.
pub fn make_default(paths: &Paths, stateroot: &str, d: &DeploymentRecord) -> Result<bool> {
    let w = sysroot::open_writable(paths)?;
    let sr = &w.sysroot;
    let all = sr.deployments();
    let pos = all
        .iter()
        .position(|x| {
            x.osname() == stateroot
                && x.csum() == d.checksum.as_str()
                && x.deployserial() == d.serial
        })
        .with_context(|| {
            format!(
                "deployment {stateroot} {}.{} is not in the boot list of sysroot {}",
                d.checksum,
                d.serial,
                paths.sysroot.display()
            )
        })?;
    if pos == 0 {
        return Ok(false);
    }
    let mut order = all.clone();
    let first = order.remove(pos);
    order.insert(0, first);
    sr.write_deployments_with_options(&order, &without_postclean(), gio::Cancellable::NONE)
        .with_context(|| format!("writing the boot order with {stateroot} first"))?;
    Ok(true)
}

/// The boot entry (kernel, initramfs, arguments) of deployment `d` of `stateroot`.
pub fn boot_entry(
    paths: &Paths,
    stateroot: &str,
    d: &DeploymentRecord,
) -> Result<crate::bootloader::Entry> {
    let sr = sysroot::open(paths)?;
    let dep = sr
        .deployments()
        .into_iter()
        .find(|x| {
            x.osname() == stateroot
                && x.csum() == d.checksum.as_str()
                && x.deployserial() == d.serial
        })
        .with_context(|| {
            format!(
                "deployment {stateroot} {}.{} not found",
                d.checksum, d.serial
            )
        })?;
    let bc = dep
        .bootconfig()
        .with_context(|| format!("deployment {stateroot} has no boot entry"))?;
    let get = |k: &str| bc.get(k).map(|s| s.to_string());
    Ok(crate::bootloader::Entry {
        linux: get("linux").context("the boot entry has no kernel")?,
        initrd: get("initrd"),
        options: get("options").unwrap_or_default(),
    })
}
