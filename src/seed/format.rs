//! The seed image format, version [`SEED_FORMAT_VERSION`].
//!
//! A seed is a standard single-architecture OCI image. Its config carries LCA's two labels: the
//! format version and the seed info (JSON, [`SeedInfo`]), so a target can check compatibility by
//! reading the config alone. Its layers, in this order, each annotated with its role
//! ([`ANNOTATION_ROLE`]):
//!
//! | role | media type | content (paths inside the layer) |
//! |---|---|---|
//! | `meta` | tar+gzip | `seed/info.json`, `seed/ostree-index.json` ([`OstreeIndex`]), `seed/containers.list` (one pull-spec per line), `seed/etc.deletions` (one `/etc/...` path per line), `seed/origin` (the deployment's `.origin`) |
//! | `etc` | tar+gzip | `seed/etc/...`: the seed's `/etc` files that differ from the commit's defaults |
//! | `var` | tar+gzip | `seed/var/...`: the seed's `/var` minus excluded paths |
//! | `ostree-pack` (one or more) | **uncompressed** tar | `seed/ostree/objects/<xx>/<rest>.<type>`: the commit's objects in ostree *archive* format |
//!
//! Why packs are uncompressed: archive-format content objects are already zlib-compressed one by
//! one, and an uncompressed tar lets a target fetch exactly the objects it lacks with HTTP range
//! requests at the offsets recorded in `ostree-index.json` — a target that already holds most of
//! the OS downloads only the difference (LCA's `ostree.tgz` makes every target download all of
//! it). Every fetched object is verified by ostree's own checksum when it is imported, and the
//! commit checksum is anchored in the seed info, which is covered by the image digest.
//!
//! Tar entries keep owner, mode, mtime, xattrs and SELinux labels (PAX `SCHILY.xattr.*`).

use serde::{Deserialize, Serialize};

/// The seed format this ibu writes and reads.
pub const SEED_FORMAT_VERSION: u32 = 1;

/// LCA's label for the seed format version.
pub const LABEL_FORMAT_VERSION: &str = "com.openshift.lifecycle-agent.seed_format_version";
/// LCA's label for the seed info (JSON).
pub const LABEL_SEED_INFO: &str = "com.openshift.lifecycle-agent.seed_cluster_info";
/// Layer annotation naming the layer's role (`meta`, `etc`, `var`, `ostree-pack`).
pub const ANNOTATION_ROLE: &str = "dev.ibu.seed.role";

pub const ROLE_META: &str = "meta";
pub const ROLE_ETC: &str = "etc";
pub const ROLE_VAR: &str = "var";
pub const ROLE_OSTREE_PACK: &str = "ostree-pack";

/// Paths inside the layers.
pub const PATH_INFO: &str = "seed/info.json";
pub const PATH_OSTREE_INDEX: &str = "seed/ostree-index.json";
pub const PATH_CONTAINERS_LIST: &str = "seed/containers.list";
pub const PATH_ETC_DELETIONS: &str = "seed/etc.deletions";
pub const PATH_ORIGIN: &str = "seed/origin";
pub const PREFIX_ETC: &str = "seed/etc";
pub const PREFIX_VAR: &str = "seed/var";
pub const PREFIX_OSTREE_OBJECTS: &str = "seed/ostree/objects";

/// Target size of one ostree pack layer (a pack holds whole objects, so it may exceed it).
pub const PACK_TARGET_BYTES: u64 = 64 << 20;

/// CPU topology of the seed host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTopology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

/// Sizes a target needs for its free-space checks before it pulls anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSizes {
    /// Bytes of the commit's objects in archive format (the most a target downloads for them).
    pub ostree_archive_bytes: u64,
    pub ostree_objects: u64,
    /// Bytes of the checked-out deployment (what the new stateroot occupies in /sysroot).
    pub deployment_bytes: u64,
    /// Kernel and initramfs (what the new boot entry occupies in /boot).
    pub boot_bytes: u64,
    pub etc_bytes: u64,
    pub var_bytes: u64,
    /// Sum of the sizes of the images in `containers.list` (what precaching may write).
    pub images_bytes: u64,
}

/// The seed info: LCA's `seed_cluster_info` label, with LCA's field names where a field means
/// the same (`has_proxy`, `has_fips`, `container_storage_mountpoint_target`, `node_ips`,
/// `sno_hostname`) and ibu's own for what a node-level seed needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedInfo {
    /// The OS version of the seed (its commit's `version`); a target's `seedImageRef.version`
    /// must equal it.
    pub version: String,
    /// `ID` from the seed's os-release.
    pub os_id: String,
    /// `uname -m` of the seed (`x86_64`).
    pub architecture: String,
    pub cpu_topology: CpuTopology,
    /// Kernel arguments of the seed's deployment, without ostree's own (`ostree=`) and ibu's
    /// (`ibu=`).
    pub kernel_args: Vec<String>,
    pub has_proxy: bool,
    pub has_fips: bool,
    /// `IPv4`, `IPv6`, `DualStack` or `None`.
    pub ip_family: String,
    pub container_storage_mountpoint_target: String,
    /// ibu version that made the seed.
    pub agent_version: String,
    /// The seed's hostname (information only: never applied to a target).
    pub sno_hostname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_ips: Vec<String>,
    /// The booted commit the seed carries.
    pub ostree_commit: String,
    /// The seed's stateroot (information only: targets name their own).
    pub stateroot: String,
    pub sizes: SeedSizes,
    /// Number of images in `containers.list`.
    pub images: u64,
    /// RFC 3339 creation time.
    pub created: String,
}

/// Where each ostree object lives in the pack layers (`seed/ostree-index.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OstreeIndex {
    pub commit: String,
    pub packs: Vec<PackIndex>,
}

/// One pack layer and the objects in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackIndex {
    /// Position of the layer in the manifest's `layers`.
    pub layer: usize,
    /// Digest of the (uncompressed) layer blob.
    pub digest: String,
    pub objects: Vec<PackedObject>,
}

/// One object: `<checksum>.<type>` (`commit`, `commitmeta`, `dirtree`, `dirmeta`, `filez`), and
/// the byte range of its content in the layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackedObject {
    pub object: String,
    pub offset: u64,
    pub size: u64,
}
