//! Real filesystems mounted for a test, unmounted when the guard drops.
//!
//! Container storage must be its own mount for ibu (as for LCA), so tests that exercise that
//! decision mount a real filesystem: a size-limited tmpfs (instant, exact `statvfs` numbers), or a
//! loop-mounted xfs like a real node's. Project quotas (`prjquota`) are not offered: the kernel
//! of the test machine is built without XFS quota support and refuses the option.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use nix::mount::{MntFlags, MsFlags};

use super::{run, sh};
use xshell::cmd;

/// A filesystem to mount for a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFs {
    /// tmpfs of this many MiB.
    Tmpfs { size_mib: u64 },
    /// xfs on a sparse image file of this many MiB (mkfs.xfs requires at least 300), mounted
    /// through a loop device that is released on unmount.
    Xfs { size_mib: u64 },
}

/// A mounted filesystem; dropping it unmounts (lazily if it is busy).
#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
    fs: TestFs,
}

impl Mount {
    /// Mount `fs` on the existing directory `target`; an xfs image is created in `scratch`.
    pub fn new(fs: TestFs, target: &Path, scratch: &Path) -> Result<Mount> {
        match fs {
            TestFs::Tmpfs { size_mib } => {
                let data = format!("size={size_mib}m,mode=0755");
                nix::mount::mount(
                    Some("tmpfs"),
                    target,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some(data.as_str()),
                )
                .with_context(|| format!("mounting tmpfs ({data}) on {}", target.display()))?;
            }
            TestFs::Xfs { size_mib } => {
                if size_mib < 300 {
                    bail!("mkfs.xfs needs at least 300 MiB, asked for {size_mib}");
                }
                static IMAGES: AtomicUsize = AtomicUsize::new(0);
                let n = IMAGES.fetch_add(1, Ordering::Relaxed);
                let image = scratch.join(format!("xfs-{n}.img"));
                let f = std::fs::File::create(&image)
                    .with_context(|| format!("creating {}", image.display()))?;
                f.set_len(size_mib * 1024 * 1024)
                    .with_context(|| format!("sizing {}", image.display()))?;
                drop(f);
                let sh = sh()?;
                run(cmd!(sh, "mkfs.xfs -q {image}"))?;
                run(cmd!(sh, "mount -t xfs -o loop {image} {target}"))?;
            }
        }
        Ok(Mount {
            target: target.to_path_buf(),
            fs,
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn fs(&self) -> TestFs {
        self.fs
    }
}

/// Unmount every mount strictly below `dir`, deepest first (lazily if busy). Best effort.
pub fn unmount_below(dir: &Path) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut inner: Vec<PathBuf> = ibu::facts::disks::parse_mountinfo(&text)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    inner.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    inner.dedup();
    for m in inner {
        if nix::mount::umount2(&m, MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&m, MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.target, MntFlags::empty()).is_err() {
            let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}
