//! Where things are: the booted host, or a directory sysroot given with `--sysroot`.
//!
//! On a booted ostree host `/etc` and `/var` are the booted deployment's, the ostree sysroot is
//! `/` for libostree (the physical root is mounted at `/sysroot`), `/boot` is the boot partition.
//!
//! `--sysroot DIR` points ibu at an ostree sysroot in a directory, as `ostree admin --sysroot`
//! does. Such a sysroot has no booted deployment, so which deployment counts as "booted" is named
//! by the **sandbox file** `DIR/.ibu-sandbox.yaml` — an explicit test seam (see [`Sandbox`]).
//! `/etc` and `/var` then resolve to that deployment's `etc` and its stateroot's `var`, exactly
//! the directories a real boot would bind-mount, so the same code paths serve both modes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// File name of the sandbox file inside a directory sysroot.
pub const SANDBOX_FILE: &str = ".ibu-sandbox.yaml";

/// The test seam: which deployment of a directory sysroot plays "booted".
///
/// Read only when `--sysroot DIR` names a directory other than `/`; never on a booted host.
/// Tests "reboot" a sandbox by rewriting this file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sandbox {
    pub booted: SandboxDeployment,
    /// Stands in for `/proc/sys/kernel/random/boot_id`: tests "reboot" by changing it (with
    /// `booted`). Default `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Stands in for the seconds since boot (`CLOCK_BOOTTIME`), which the init monitor's
    /// timeout is measured against. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Stands in for `systemctl is-system-running` (`running`, `degraded`, `starting`, ...),
    /// optionally followed by `: unit, unit` naming failed units. Default `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_state: Option<String>,
}

impl Sandbox {
    /// A sandbox booted into `booted`, with the default boot id, uptime and system state.
    pub fn booted(booted: SandboxDeployment) -> Sandbox {
        Sandbox {
            booted,
            boot_id: None,
            uptime_seconds: None,
            system_state: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxDeployment {
    pub stateroot: String,
    pub checksum: String,
    pub serial: i32,
}

impl Sandbox {
    pub fn read(sysroot: &Path) -> Result<Sandbox> {
        let p = sysroot.join(SANDBOX_FILE);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{} is a directory sysroot with no booted deployment; name the deployment that \
                 plays booted in {} (see README, \"Directory sysroots\")",
                sysroot.display(),
                p.display()
            )
        })?;
        let s: Sandbox =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        for (what, v) in [
            ("stateroot", &s.booted.stateroot),
            ("checksum", &s.booted.checksum),
        ] {
            if v.is_empty() || v.contains('/') || v.starts_with('.') {
                bail!("{}: invalid booted.{what} {v:?}", p.display());
            }
        }
        Ok(s)
    }

    pub fn write(&self, sysroot: &Path) -> Result<()> {
        let mut text = String::from(
            "# ibu test seam: the deployment of this directory sysroot that counts as booted\n",
        );
        text.push_str(&serde_yaml::to_string(self)?);
        crate::fsutil::write_atomic(&sysroot.join(SANDBOX_FILE), text.as_bytes(), 0o644)
    }
}

/// Resolved locations of everything ibu reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `Some` when running against a directory sysroot.
    pub sandbox: Option<Sandbox>,
    /// The sysroot for libostree (`/` on a booted host).
    pub sysroot: PathBuf,
    /// Where the physical root filesystem is mounted, for free-space checks.
    pub sysroot_mount: PathBuf,
    pub boot: PathBuf,
    pub etc: PathBuf,
    pub var: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    /// The booted host.
    pub fn host() -> Paths {
        Paths {
            sandbox: None,
            sysroot: PathBuf::from("/"),
            sysroot_mount: PathBuf::from("/sysroot"),
            boot: PathBuf::from("/boot"),
            etc: PathBuf::from("/etc"),
            var: PathBuf::from("/var"),
            run: PathBuf::from("/run"),
        }
    }

    /// From `--sysroot DIR`: the host if DIR is `/`, else a sandbox.
    pub fn for_sysroot(dir: Option<&Path>) -> Result<Paths> {
        match dir {
            None => Ok(Paths::host()),
            Some(d) => {
                let canon = d
                    .canonicalize()
                    .with_context(|| format!("sysroot {}", d.display()))?;
                if canon == Path::new("/") {
                    Ok(Paths::host())
                } else {
                    Paths::sandbox(&canon)
                }
            }
        }
    }

    /// A directory sysroot with its sandbox file.
    pub fn sandbox(dir: &Path) -> Result<Paths> {
        if !dir.join("ostree/repo").is_dir() {
            bail!(
                "{} is not an ostree sysroot (no ostree/repo; create one with `ostree admin init-fs`)",
                dir.display()
            );
        }
        let sandbox = Sandbox::read(dir)?;
        let b = &sandbox.booted;
        let stateroot = dir.join("ostree/deploy").join(&b.stateroot);
        let deployment = stateroot
            .join("deploy")
            .join(format!("{}.{}", b.checksum, b.serial));
        if !deployment.is_dir() {
            bail!(
                "{}: booted deployment {} does not exist",
                dir.join(SANDBOX_FILE).display(),
                deployment.display()
            );
        }
        Ok(Paths {
            sysroot: dir.to_path_buf(),
            sysroot_mount: dir.to_path_buf(),
            boot: dir.join("boot"),
            etc: deployment.join("etc"),
            var: stateroot.join("var"),
            run: dir.join("run"),
            sandbox: Some(sandbox),
        })
    }

    pub fn is_sandbox(&self) -> bool {
        self.sandbox.is_some()
    }

    /// `/etc/ibu`: the desired state and the ConfigMap/Secret drop-in tree.
    pub fn config_dir(&self) -> PathBuf {
        self.etc.join("ibu")
    }

    /// `/etc/ibu/upgrade.yaml`: the desired state.
    pub fn desired_file(&self) -> PathBuf {
        self.config_dir().join("upgrade.yaml")
    }

    /// `/var/lib/ibu`: ibu's state. `/var` is per stateroot and survives reboots and upgrades
    /// of `/usr`; the state is copied into the new stateroot before the pivot.
    pub fn state_dir(&self) -> PathBuf {
        self.var.join("lib/ibu")
    }

    /// `/var/lib/ibu/state.yaml`: status and progress.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.yaml")
    }

    /// `/var/lib/ibu/workspace`: scratch space for a stage (seed content, authfiles); removed by
    /// abort and finalize.
    pub fn workspace(&self) -> PathBuf {
        self.state_dir().join("workspace")
    }

    /// `/run/ibu/ibu.lock`: the instance lock (tmpfs, so it never outlives a boot).
    pub fn lock_file(&self) -> PathBuf {
        self.run.join("ibu/ibu.lock")
    }

    /// `/var/lib/containers`: the shared container storage mount.
    pub fn container_storage(&self) -> PathBuf {
        self.var.join("lib/containers")
    }

    /// podman's `--root` and `--runroot`, or `None` for podman's defaults on a booted host.
    ///
    /// In a sandbox the storage lives in the sandbox's `/var/lib/containers/storage`. The runroot
    /// (locks, mount state) must be short — podman refuses one longer than 50 characters — so
    /// it is `/run/ibu-podman-<hash of the sysroot path>` rather than a path inside the sandbox.
    pub fn podman_storage(&self) -> Option<(PathBuf, PathBuf)> {
        self.sandbox.as_ref().map(|_| {
            use sha2::{Digest, Sha256};
            let h = Sha256::digest(self.sysroot.as_os_str().as_encoded_bytes());
            let tag: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
            (
                self.container_storage().join("storage"),
                PathBuf::from(format!("/run/ibu-podman-{tag}")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_resolves_booted_deployment_dirs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("ostree/repo")).unwrap();
        std::fs::create_dir_all(root.join("ostree/deploy/os/deploy/abc.0/etc")).unwrap();
        Sandbox::booted(SandboxDeployment {
            stateroot: "os".into(),
            checksum: "abc".into(),
            serial: 0,
        })
        .write(root)
        .unwrap();
        let p = Paths::for_sysroot(Some(root)).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(p.etc, root.join("ostree/deploy/os/deploy/abc.0/etc"));
        assert_eq!(p.var, root.join("ostree/deploy/os/var"));
        assert_eq!(p.desired_file(), p.etc.join("ibu/upgrade.yaml"));
        assert_eq!(p.state_file(), p.var.join("lib/ibu/state.yaml"));
        let (root_dir, runroot) = p.podman_storage().unwrap();
        assert_eq!(root_dir, p.var.join("lib/containers/storage"));
        assert!(runroot.as_os_str().len() <= 50, "{}", runroot.display());
    }

    #[test]
    fn missing_sandbox_file_is_explained() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ostree/repo")).unwrap();
        let e = format!("{:#}", Paths::sandbox(d.path()).unwrap_err());
        assert!(e.contains(SANDBOX_FILE), "{e}");
        assert!(e.contains("no booted deployment"), "{e}");
    }

    #[test]
    fn host_paths() {
        let p = Paths::for_sysroot(Some(Path::new("/"))).unwrap();
        assert!(!p.is_sandbox());
        assert_eq!(p.desired_file(), Path::new("/etc/ibu/upgrade.yaml"));
        assert_eq!(p.podman_storage(), None);
    }
}
