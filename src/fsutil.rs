//! Crash-safe file writes.
//!
//! Every file ibu writes that another run (or a human) reads is replaced atomically: the new
//! content goes to a temporary file in the same directory, is fsynced, renamed over the old name,
//! and the directory is fsynced, so a power cut leaves either the old or the new file, never a
//! torn one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Atomically replace `path` with `contents`, created with `mode` (e.g. `0o600` for secrets).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask may have narrowed the mode; a secret must never be wider than asked.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", tmp.display()))?;
        f.write_all(contents)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// fsync a directory so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    d.sync_all()
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// `syncfs(2)` on the filesystem holding `path`: every write to it so far is on disk.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::unistd::syncfs(&f).with_context(|| format!("syncfs on {}", path.display()))
}

// EXT4_IOC_CHECKPOINT (Linux 5.13): write the journal's committed transactions to their home
// locations. FIFREEZE/FITHAW: freezing a filesystem flushes its journal or log.
nix::ioctl_write_ptr!(ext4_ioc_checkpoint, b'f', 43, u32);
nix::ioctl_readwrite!(fifreeze, b'X', 119, nix::libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, nix::libc::c_int);

/// Make everything written to the filesystem holding `dir` readable by code that does not
/// replay its journal: a bootloader. fsync makes a write durable *for Linux*, which replays the
/// journal at mount; syslinux's (and GRUB's) ext4 reader reads the disk as it is, where a file
/// renamed into place lives only in the journal until the kernel checkpoints it. A power cut
/// then leaves the bootloader the old file. ostree freezes `/boot` after writing its menu for
/// the same reason. ext4: `EXT4_IOC_CHECKPOINT`; other filesystems: a freeze/thaw cycle, but
/// only when `dir` is not on the root filesystem (freezing that would stop the node); there
/// the caller gets `Ok(false)`.
pub fn checkpoint_journal(dir: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    nix::unistd::syncfs(&d).with_context(|| format!("syncfs on {}", dir.display()))?;
    let fd = d.as_raw_fd();
    let flags: u32 = 0;
    // SAFETY: `fd` is an open descriptor owned by `d` for the whole call, and the argument is
    // a pointer to a local u32, which is what the kernel reads for this ioctl.
    match unsafe { ext4_ioc_checkpoint(fd, &flags) } {
        Ok(_) => return Ok(true),
        Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EOPNOTSUPP) => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("checkpointing the journal of {}", dir.display()));
        }
    }
    let on_root =
        std::fs::metadata("/").is_ok_and(|r| d.metadata().is_ok_and(|m| m.dev() == r.dev()));
    if on_root {
        return Ok(false);
    }
    let mut arg: nix::libc::c_int = 0;
    // SAFETY: as above; FIFREEZE and FITHAW ignore their argument.
    let frozen = unsafe { fifreeze(fd, &mut arg) };
    // SAFETY: as above. Thawed even if the freeze reported an error (it may have frozen).
    let thawed = unsafe { fithaw(fd, &mut arg) };
    match frozen {
        Ok(_) => {}
        // No freeze on this filesystem (tmpfs, ...): nothing to flush for a bootloader either.
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOTTY) => return Ok(false),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("freezing {} to flush its journal", dir.display()));
        }
    }
    if let Err(e) = thawed
        && e != nix::errno::Errno::EINVAL
    {
        return Err(e).with_context(|| format!("thawing {}", dir.display()));
    }
    Ok(true)
}

/// Create `dir` and its parents with `mode` for the directories ibu creates.
pub fn create_dir_all(dir: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_atomically_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left: {leftovers:?}");
    }

    #[test]
    fn failure_leaves_old_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"old", 0o644).unwrap();
        // A directory in the way of the rename makes the write fail.
        let blocked = d.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_atomic(&blocked, b"new", 0o644).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }
}
