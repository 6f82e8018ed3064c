//! The desired state: what the operator asked for.
//!
//! Users write an `ImageBasedUpgrade` document (LCA's custom resource, either API generation) to
//! `/etc/ibu/upgrade.yaml`. The wire formats of both generations live in [`wire`]; this module
//! holds the one normalised model the rest of ibu works with, so that the planner never needs to
//! know which generation a field came from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod image_ref;
pub mod load;
pub mod names;
pub mod refs;
mod suggest;
mod validate;
pub mod wire;
pub mod yaml;

pub use image_ref::{ImageRef, ImageRefError};
pub use load::{Loaded, SpecError, load_file, parse_str};

/// The namespace LCA's objects live in; used when a document or a reference names none.
pub const DEFAULT_NAMESPACE: &str = "openshift-lifecycle-agent";

/// Default for `autoRollbackOnFailure.initMonitorTimeoutSeconds` when unset or 0 (LCA: 30 min).
pub const DEFAULT_INIT_MONITOR_TIMEOUT_SECONDS: u64 = 1800;

/// Default for the `image-cleanup.lca.openshift.io/disk-usage-threshold-percent` annotation.
pub const DEFAULT_DISK_USAGE_THRESHOLD_PERCENT: u8 = 50;

/// The stages of an image-based upgrade, named as in LCA's `spec.stage`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Stage {
    Idle,
    Prep,
    Upgrade,
    Rollback,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Idle, Stage::Prep, Stage::Upgrade, Stage::Rollback];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Idle => "Idle",
            Stage::Prep => "Prep",
            Stage::Upgrade => "Upgrade",
            Stage::Rollback => "Rollback",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Stage {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown stage {s:?}: expected one of Idle, Prep, Upgrade, Rollback"
                )
            })
    }
}

/// Which API generation a document was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiVersion {
    #[serde(rename = "lca.openshift.io/v1alpha1")]
    V1Alpha1,
    #[serde(rename = "lca.openshift.io/v1")]
    V1,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1Alpha1 => "lca.openshift.io/v1alpha1",
            ApiVersion::V1 => "lca.openshift.io/v1",
        }
    }
}

/// A reference to a Kubernetes object (ConfigMap or Secret) by name and namespace.
/// On a node these resolve to files in the drop-in tree, see [`refs`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub namespace: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The seed to upgrade to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedRef {
    /// The seed image pull-spec as written (validated by [`ImageRef::parse`] when the stage needs it).
    pub image: String,
    /// Target version; must equal the seed's version and be semver-greater than the running one.
    pub version: String,
    /// Secret whose `.dockerconfigjson` authenticates the pull.
    pub pull_secret: Option<ObjectRef>,
}

/// Automatic rollback settings, from v1alpha1 fields or v1 annotations. `true` means enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoRollback {
    /// Effective timeout (0 or unset in the document means the default, 1800).
    pub init_monitor_timeout_seconds: u64,
    pub init_monitor: bool,
    pub post_reboot_config: bool,
    pub upgrade_completion: bool,
}

impl Default for AutoRollback {
    fn default() -> Self {
        AutoRollback {
            init_monitor_timeout_seconds: DEFAULT_INIT_MONITOR_TIMEOUT_SECONDS,
            init_monitor: true,
            post_reboot_config: true,
            upgrade_completion: true,
        }
    }
}

/// Image cleanup before Prep (LCA's `image-cleanup.lca.openshift.io/*` annotations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCleanup {
    pub on_prep: bool,
    pub disk_usage_threshold_percent: u8,
}

impl Default for ImageCleanup {
    fn default() -> Self {
        ImageCleanup {
            on_prep: true,
            disk_usage_threshold_percent: DEFAULT_DISK_USAGE_THRESHOLD_PERCENT,
        }
    }
}

/// The normalised desired state, whichever API generation it was written in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    pub api_version: ApiVersion,
    pub name: String,
    pub namespace: String,
    pub stage: Stage,
    pub seed: Option<SeedRef>,
    /// v1alpha1 only: a ConfigMap listing extra images to precache.
    pub additional_images: Option<ObjectRef>,
    pub extra_manifests: Vec<ObjectRef>,
    pub oadp_content: Vec<ObjectRef>,
    pub auto_rollback: AutoRollback,
    pub image_cleanup: ImageCleanup,
    /// `lca.openshift.io/manual-cleanup-done` is present (the way out of AbortFailed/FinalizeFailed).
    /// Not part of the spec digest: like in LCA it does not bump the generation.
    #[serde(skip)]
    pub manual_cleanup_done: bool,
}

impl Desired {
    /// The document every fresh node starts from: Idle, nothing else.
    pub fn idle() -> Desired {
        Desired {
            api_version: ApiVersion::V1,
            name: "upgrade".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            stage: Stage::Idle,
            seed: None,
            additional_images: None,
            extra_manifests: Vec::new(),
            oadp_content: Vec::new(),
            auto_rollback: AutoRollback::default(),
            image_cleanup: ImageCleanup::default(),
            manual_cleanup_done: false,
        }
    }

    /// A stable digest of everything that counts as "the spec": changes bump the generation.
    pub fn spec_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        // serde_json of a struct is deterministic (field order is declaration order).
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let sum = Sha256::digest(&bytes);
        let mut hex = String::with_capacity(64);
        for b in sum.iter() {
            hex.push_str(&format!("{b:02x}"));
        }
        format!("sha256:{hex}")
    }
}
