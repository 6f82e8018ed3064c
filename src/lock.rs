//! One ibu at a time.
//!
//! Every command that may change the host takes an exclusive `flock(2)` on a lock file first.
//! The lock dies with the process (crash, SIGKILL, power cut), so there is never a stale lock
//! to clean up; systemd additionally never runs two `ibu.service` at once.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<std::fs::File>,
    path: PathBuf,
}

/// Another process holds the lock.
#[derive(Debug, thiserror::Error)]
#[error("another ibu is running (lock {path} is held{holder})")]
pub struct Locked {
    pub path: PathBuf,
    holder: String,
}

impl InstanceLock {
    /// Take the lock without waiting; `Err(Locked)` (downcastable) if someone else has it.
    pub fn try_acquire(path: &Path) -> Result<InstanceLock> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_dir_all(dir, 0o755)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                use std::io::{Seek, Write};
                // Record who holds it, for the error message of the next one.
                let _ = lock.set_len(0);
                let _ = lock.seek(std::io::SeekFrom::Start(0));
                let _ = writeln!(lock, "{}", std::process::id());
                Ok(InstanceLock {
                    _lock: lock,
                    path: path.to_path_buf(),
                })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" by pid {pid}"))
                    .unwrap_or_default();
                Err(Locked {
                    path: path.to_path_buf(),
                    holder,
                }
                .into())
            }
            Err((_, e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_until_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/ibu.lock");
        let first = InstanceLock::try_acquire(&p).unwrap();
        let err = InstanceLock::try_acquire(&p).unwrap_err();
        let locked = err.downcast_ref::<Locked>().expect("typed Locked error");
        assert!(
            locked.to_string().contains("another ibu is running"),
            "{locked}"
        );
        assert!(locked.to_string().contains(&std::process::id().to_string()));
        drop(first);
        InstanceLock::try_acquire(&p).unwrap();
    }
}
