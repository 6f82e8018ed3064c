//! Opening the ostree sysroot for reading or writing, booted host or directory sysroot.
//!
//! Writing to a booted host's sysroot needs `/sysroot` read-write, which the running system
//! keeps read-only; like `ostree admin`, ibu enters a private mount namespace (so nothing it
//! remounts is visible to the rest of the system) and remounts `/sysroot` read-write there,
//! then tells libostree so. A directory sysroot (`--sysroot DIR`) needs none of that.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use ostree::gio;

use crate::paths::Paths;

/// Open and load the sysroot (read-only use).
pub fn open(paths: &Paths) -> Result<ostree::Sysroot> {
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(&paths.sysroot)));
    sysroot
        .load(gio::Cancellable::NONE)
        .with_context(|| format!("loading ostree sysroot {}", paths.sysroot.display()))?;
    Ok(sysroot)
}

/// Make the sysroot writable for this process (a no-op for a directory sysroot): for steps that
/// write into a stateroot directly rather than through libostree.
pub fn ensure_writable(paths: &Paths) -> Result<()> {
    if !paths.is_sandbox() {
        private_mount_namespace_with_rw_sysroot(&paths.sysroot_mount)?;
    }
    Ok(())
}

/// Open, make writable, take libostree's sysroot lock, and load. The lock is released when the
/// returned [`WritableSysroot`] drops.
pub fn open_writable(paths: &Paths) -> Result<WritableSysroot> {
    if !paths.is_sandbox() {
        private_mount_namespace_with_rw_sysroot(&paths.sysroot_mount)?;
    }
    let sysroot = ostree::Sysroot::new(Some(&gio::File::for_path(&paths.sysroot)));
    if !paths.is_sandbox() {
        sysroot.set_mount_namespace_in_use();
    }
    sysroot
        .lock()
        .with_context(|| format!("locking ostree sysroot {}", paths.sysroot.display()))?;
    let w = WritableSysroot { sysroot };
    w.sysroot
        .load(gio::Cancellable::NONE)
        .with_context(|| format!("loading ostree sysroot {}", paths.sysroot.display()))?;
    Ok(w)
}

/// A loaded sysroot holding libostree's lock.
pub struct WritableSysroot {
    pub sysroot: ostree::Sysroot,
}

impl Drop for WritableSysroot {
    fn drop(&mut self) {
        self.sysroot.unlock();
    }
}

/// The deployment that is booted: libostree's answer on a host, the sandbox file's in a sandbox.
pub fn booted_deployment(paths: &Paths, sysroot: &ostree::Sysroot) -> Option<ostree::Deployment> {
    match &paths.sandbox {
        None => sysroot.booted_deployment(),
        Some(sb) => sysroot.deployments().into_iter().find(|d| {
            d.osname() == sb.booted.stateroot
                && d.csum() == sb.booted.checksum
                && d.deployserial() == sb.booted.serial
        }),
    }
}

/// Enter a private mount namespace and make `/sysroot` writable in it, once per process.
///
/// Must run before the process starts threads: a mount namespace change affects only the
/// calling thread. ibu calls it from the single-threaded reconcile path before libostree does
/// any work.
fn private_mount_namespace_with_rw_sysroot(sysroot_mount: &Path) -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        (|| -> Result<()> {
            use nix::mount::{MsFlags, mount};
            use nix::sched::{CloneFlags, unshare};
            unshare(CloneFlags::CLONE_NEWNS).context("entering a private mount namespace")?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .context("making mounts private in ibu's mount namespace")?;
            let read_only = || -> Result<bool> {
                let st = nix::sys::statvfs::statvfs(sysroot_mount)
                    .with_context(|| format!("statvfs {}", sysroot_mount.display()))?;
                Ok(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            };
            // A read-only bind mount (ostree-remount's sysroot.readonly) clears with a bind
            // remount; a read-only superblock with a plain remount. Try them in that order.
            for flags in [MsFlags::MS_REMOUNT | MsFlags::MS_BIND, MsFlags::MS_REMOUNT] {
                if !read_only()? {
                    break;
                }
                mount(
                    None::<&str>,
                    sysroot_mount,
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
                .with_context(|| format!("remounting {} read-write", sysroot_mount.display()))?;
            }
            if read_only()? {
                anyhow::bail!(
                    "{} is still read-only after remounting",
                    sysroot_mount.display()
                );
            }
            Ok(())
        })()
        .map_err(|e| format!("{e:#}"))
    });
    r.clone().map_err(anyhow::Error::msg)
}
