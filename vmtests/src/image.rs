//! The VM test images, built by `vmtests/image/build.sh` and cached outside the clone under a
//! hash of every input of the recipe (the scripts, package lists, overlays). The ibu binary is
//! not an input: each VM gets it through Ignition.
//!
//! ```text
//! $IBU_VMTESTS_CACHE (default /var/cache/ibu-vmtests)/
//!   <key>/repo       ostree archive repository: ibu-vm/old (1.0.0), ibu-vm/new (1.1.0)
//!   <key>/disk.raw   the pristine disk (read-only; VMs boot qcow2 overlays of it)
//!   <key>/disk-new.raw  the same with the new OS deployed (the seed VM's)
//!   <key>/info.env   stateroot, commit, disk size
//!   <key>/build.log  the build's output
//!   .lock            held while building
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::report;

/// Bump to rebuild every cached image when something outside `vmtests/image/` changes how
/// images are made.
const RECIPE_EPOCH: &str = "1";

/// A built image set in the cache.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
    pub key: String,
    /// The pristine disk: never booted, the old OS deployed, Ignition's first-boot kargs.
    pub disk: PathBuf,
    /// The same with the new OS deployed (what the seed VM runs).
    pub disk_new: PathBuf,
    /// The ostree repository with both OS versions.
    pub repo: PathBuf,
    pub info: BTreeMap<String, String>,
}

impl Images {
    pub fn stateroot(&self) -> &str {
        self.info.get("STATEROOT").map_or("debian", String::as_str)
    }
    pub fn commit(&self) -> &str {
        self.info.get("COMMIT").map_or("", String::as_str)
    }
}

pub fn cache_root() -> PathBuf {
    std::env::var_os("IBU_VMTESTS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ibu-vmtests"))
}

/// The directory holding the recipe.
pub fn recipe_dir(repo: &Path) -> PathBuf {
    repo.join("vmtests/image")
}

/// The cache key: a hash over the recipe's files (path, executable bit, contents).
pub fn input_key(repo: &Path) -> Result<String> {
    let dir = recipe_dir(repo);
    let mut files = Vec::new();
    collect(&dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    h.update(format!("epoch {RECIPE_EPOCH}\n"));
    for f in &files {
        let meta = fs_err::symlink_metadata(f)?;
        let rel = f.strip_prefix(&dir).unwrap_or(f);
        h.update(format!(
            "{} {:o} {}\n",
            rel.display(),
            meta.permissions().mode() & 0o111,
            meta.len()
        ));
        if meta.file_type().is_symlink() {
            h.update(fs_err::read_link(f)?.to_string_lossy().as_bytes());
        } else {
            h.update(fs_err::read(f)?);
        }
    }
    let digest = h.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The images for the current recipe: from the cache, or built now (under a lock, so two
/// harness runs do not build the same thing twice).
pub fn ensure(repo: &Path, force: bool) -> Result<Images> {
    // For debugging: use an image set as it is, whatever the recipe says now.
    if let Some(dir) = std::env::var_os("IBU_VMTESTS_IMAGES") {
        let dir = PathBuf::from(dir);
        report::note(&format!(
            "images: {} (IBU_VMTESTS_IMAGES, not checked against the recipe)",
            dir.display()
        ));
        return load(dir, "override".into());
    }
    let root = cache_root();
    fs_err::create_dir_all(&root)?;
    let key = input_key(repo)?;
    let dir = root.join(&key);
    let lock_path = root.join(".lock");
    let lock = fs_err::File::create(&lock_path)?;
    let _guard = nix::fcntl::Flock::lock(lock.into_parts().0, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", lock_path.display()))?;

    if force && dir.exists() {
        remove_tree(&dir)?;
    }
    if dir.join("disk.raw").exists() && dir.join("disk-new.raw").exists() {
        report::note(&format!("images: cached {} (key {key})", dir.display()));
        return load(dir, key);
    }
    let tmp = root.join(format!("{key}.building"));
    if tmp.exists() {
        remove_tree(&tmp)?;
    }
    let log = root.join(format!("{key}.build.log"));
    report::note(&format!(
        "images: building {} (key {key}); log {}",
        dir.display(),
        log.display()
    ));
    let started = Instant::now();
    let status = build(repo, &tmp, &log)?;
    if !status.success() {
        let tail = tail_lines(&log, 40);
        let _ = remove_tree(&tmp);
        bail!(
            "building the VM images failed ({status}); see {}. Last lines:\n{tail}",
            log.display()
        );
    }
    fs_err::rename(&log, tmp.join("build.log"))?;
    for disk in ["disk.raw", "disk-new.raw"] {
        fs_err::set_permissions(tmp.join(disk), std::fs::Permissions::from_mode(0o444))?;
    }
    fs_err::rename(&tmp, &dir)?;
    report::note(&format!(
        "images: built in {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    prune(&root, &key);
    load(dir, key)
}

fn build(repo: &Path, out: &Path, log: &Path) -> Result<std::process::ExitStatus> {
    let script = recipe_dir(repo).join("build.sh");
    let logf = fs_err::File::create(log)?;
    let errf = logf.try_clone()?;
    // Progress lines ("[image  12s] ...") go to the log and, through tee-like echoing, to us.
    let mut child = std::process::Command::new(&script)
        .arg(out)
        .stdout(logf.into_parts().0)
        .stderr(errf.into_parts().0)
        .spawn()
        .with_context(|| format!("running {}", script.display()))?;
    let mut shown = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            echo_progress(log, &mut shown);
            return Ok(status);
        }
        echo_progress(log, &mut shown);
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// Print the build's own progress lines as they appear.
fn echo_progress(log: &Path, shown: &mut usize) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("[image")).collect();
    for l in lines.iter().skip(*shown) {
        report::note(&format!("  {l}"));
    }
    *shown = lines.len();
}

fn load(dir: PathBuf, key: String) -> Result<Images> {
    let info_path = dir.join("info.env");
    let info = fs_err::read_to_string(&info_path)?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Images {
        disk: dir.join("disk.raw"),
        disk_new: dir.join("disk-new.raw"),
        repo: dir.join("repo"),
        dir,
        key,
        info,
    })
}

/// Remove cached images of other keys (each is a few GiB); a failure only warns.
fn prune(root: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name == keep || name.starts_with(keep) {
            continue;
        }
        match remove_tree(&e.path()) {
            Ok(()) => report::note(&format!("images: removed old {}", e.path().display())),
            Err(err) => report::note(&format!("images: could not remove old {name}: {err:#}")),
        }
    }
}

fn remove_tree(path: &Path) -> Result<()> {
    if path.is_dir() {
        // The pristine disk is read-only; ostree checkouts may be immutable-flagged.
        let _ = std::process::Command::new("chattr")
            .args(["-R", "-i"])
            .arg(path)
            .output();
        fs_err::remove_dir_all(path)?;
    } else if path.exists() {
        fs_err::remove_file(path)?;
    }
    Ok(())
}

pub fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
