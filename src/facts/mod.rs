//! Facts: what is true on the host right now, gathered fresh on every run.
//!
//! Facts come in groups (ostree, storage, host, containers, footprint), each gathered on first use
//! and cached for the rest of the run. The planner asks only for the groups its decision needs,
//! so a converged run touches almost nothing (see the no-op benchmark). The planner sees facts
//! through the [`Observe`] trait; [`Live`] reads the real system, and tests pass fixed values.

use std::cell::OnceCell;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::paths::Paths;

pub mod boot;
pub mod containers;
pub mod disks;
pub mod host;
pub mod ostree;

/// Read access to the facts, each group gathered lazily.
pub trait Observe {
    fn ostree(&self) -> Result<&OstreeFacts>;
    fn storage(&self) -> Result<&StorageFacts>;
    fn host(&self) -> Result<&HostFacts>;
    fn containers(&self) -> Result<&ContainerFacts>;
    /// Space the running OS occupies, the basis of the free-space estimate for a seed.
    fn footprint(&self) -> Result<&Footprint>;
    /// This boot: its id, how long ago it started, systemd's state.
    fn boot(&self) -> Result<&BootFacts>;
}

/// This boot (see [`boot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootFacts {
    /// Changes with every boot (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Seconds since the kernel started.
    pub uptime_secs: u64,
    pub system: boot::SystemState,
}

/// One ostree deployment, as `ostree admin status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentFacts {
    /// Position in the boot order; 0 boots next.
    pub index: usize,
    pub stateroot: String,
    pub checksum: String,
    pub serial: i32,
    /// The commit's `version` metadata, if any.
    pub version: Option<String>,
    pub pinned: bool,
    pub staged: bool,
    pub booted: bool,
    /// Index 0: what the bootloader starts next.
    pub default: bool,
    /// Kernel arguments of the boot entry.
    pub kargs: String,
    /// The `origin/refspec` of the `.origin` file, if any.
    pub refspec: Option<String>,
}

impl DeploymentFacts {
    /// `<checksum>.<serial>`, the deployment's directory name.
    pub fn dirname(&self) -> String {
        format!("{}.{}", self.checksum, self.serial)
    }
}

/// The sysroot's deployments and stateroots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OstreeFacts {
    /// In boot order (index 0 first).
    pub deployments: Vec<DeploymentFacts>,
    /// Directories under `ostree/deploy/`, sorted; may include stateroots without deployments.
    pub stateroots: Vec<String>,
    /// `ID` from the booted deployment's os-release (names new stateroots, like LCA's `rhcos`).
    pub os_id: Option<String>,
}

impl OstreeFacts {
    pub fn booted(&self) -> Option<&DeploymentFacts> {
        self.deployments.iter().find(|d| d.booted)
    }

    pub fn booted_stateroot(&self) -> Option<&str> {
        self.booted().map(|d| d.stateroot.as_str())
    }

    /// The version of the running OS: the booted commit's `version`.
    pub fn running_version(&self) -> Option<&str> {
        self.booted().and_then(|d| d.version.as_deref())
    }
}

/// `statvfs` of one filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsUsage {
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
}

impl FsUsage {
    pub fn total_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }

    /// Bytes an unprivileged writer can still use.
    pub fn available_bytes(&self) -> u64 {
        self.blocks_available.saturating_mul(self.block_size)
    }

    /// LCA's formula: `(blocks - bavail) * 100 / blocks`, rounded down.
    pub fn used_percent(&self) -> u8 {
        if self.blocks == 0 {
            return 0;
        }
        let used = self.blocks.saturating_sub(self.blocks_available);
        ((used.saturating_mul(100)) / self.blocks).min(100) as u8
    }
}

/// A mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountFacts {
    pub mount_point: PathBuf,
    /// The mount source from mountinfo (e.g. `/dev/vdb`).
    pub source: String,
    pub fs_type: String,
    pub options: String,
    pub usage: FsUsage,
}

/// Disks: the shared container storage and the space ibu writes into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageFacts {
    /// `/var/lib/containers` (resolved for the sandbox).
    pub container_storage_path: PathBuf,
    /// `Some` when `/var/lib/containers` is its own mount.
    pub container_storage: Option<MountFacts>,
    /// `What=` of `var-lib-containers.mount` if such a unit exists (LCA's "mount target").
    pub container_storage_unit_what: Option<String>,
    pub sysroot: FsUsage,
    pub boot: FsUsage,
}

/// Which IP families the node has addresses in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IpFamily {
    IPv4,
    IPv6,
    DualStack,
    None,
}

/// CPU topology.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuTopology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

/// Host identity and configuration relevant to compatibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    pub hostname: String,
    /// `uname -m` (e.g. `x86_64`).
    pub architecture: String,
    pub cpu: CpuTopology,
    pub fips: bool,
    /// An HTTP(S) proxy is configured for system services.
    pub proxy: bool,
    /// Global unicast addresses on non-loopback interfaces.
    pub node_ips: Vec<IpAddr>,
    pub ip_family: IpFamily,
}

/// One image in container storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFacts {
    pub id: String,
    /// Names (`registry/repo:tag`) the image is known by.
    pub names: Vec<String>,
    /// Repo digests (`registry/repo@sha256:...`).
    pub digests: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: i64,
    pub size: u64,
    pub dangling: bool,
}

/// Container storage contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerFacts {
    pub images: Vec<ImageFacts>,
    /// Image IDs used by any container, running or stopped.
    pub in_use: Vec<String>,
    /// CRI-O `pinned_images` patterns (exact, `prefix*`, or `*keyword*`).
    pub pinned_patterns: Vec<String>,
}

/// What the running OS occupies (basis of the free-space estimate for a new stateroot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Footprint {
    /// Bytes of the booted deployment's tree (each inode counted once).
    pub deployment_bytes: u64,
    /// Bytes of the booted deployment's kernel and initramfs under /boot.
    pub boot_bytes: u64,
}

/// Facts of the real system, each group gathered on first use.
pub struct Live<'a> {
    paths: &'a Paths,
    ostree: OnceCell<OstreeFacts>,
    storage: OnceCell<StorageFacts>,
    host: OnceCell<HostFacts>,
    containers: OnceCell<ContainerFacts>,
    footprint: OnceCell<Footprint>,
    boot: OnceCell<BootFacts>,
}

impl<'a> Live<'a> {
    pub fn new(paths: &'a Paths) -> Live<'a> {
        Live {
            paths,
            ostree: OnceCell::new(),
            storage: OnceCell::new(),
            host: OnceCell::new(),
            containers: OnceCell::new(),
            footprint: OnceCell::new(),
            boot: OnceCell::new(),
        }
    }
}

fn cached<T>(cell: &OnceCell<T>, gather: impl FnOnce() -> Result<T>) -> Result<&T> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = gather()?;
    Ok(cell.get_or_init(|| v))
}

impl Observe for Live<'_> {
    fn ostree(&self) -> Result<&OstreeFacts> {
        cached(&self.ostree, || ostree::gather(self.paths))
    }
    fn storage(&self) -> Result<&StorageFacts> {
        cached(&self.storage, || disks::gather(self.paths))
    }
    fn host(&self) -> Result<&HostFacts> {
        cached(&self.host, || host::gather(self.paths))
    }
    fn containers(&self) -> Result<&ContainerFacts> {
        cached(&self.containers, || containers::gather(self.paths))
    }
    fn footprint(&self) -> Result<&Footprint> {
        let ostree = self.ostree()?;
        cached(&self.footprint, || ostree::footprint(self.paths, ostree))
    }
    fn boot(&self) -> Result<&BootFacts> {
        cached(&self.boot, || boot::gather(self.paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_percent_is_lcas_formula() {
        let u = FsUsage {
            block_size: 4096,
            blocks: 1000,
            blocks_free: 300,
            blocks_available: 250,
        };
        assert_eq!(u.used_percent(), 75);
        assert_eq!(FsUsage::default().used_percent(), 0);
    }
}
