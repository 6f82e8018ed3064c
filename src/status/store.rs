//! The recorded state: status plus the little ibu must remember between runs.
//!
//! Lives in `/var/lib/ibu/state.yaml` (see [`crate::paths::Paths::state_file`]). `/var` belongs
//! to the stateroot, survives reboots, and is not touched by ostree deployments; before a pivot
//! ibu copies this file into the new stateroot (and a marked copy into the old one), which is how
//! the status travels between stateroots.
//!
//! Only what cannot be derived from the host is persisted: the generation counter and the digest
//! of the spec it counts, the last accepted spec (for LCA's "can not change ... while in
//! progress" rules), the status, and step markers of the stage in progress.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Status, Timestamp};
use crate::spec::{Desired, Stage};

/// Version of the state file layout.
pub const STATE_FORMAT: u32 = 1;

/// Step markers and bookkeeping of the stage attempt in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Progress {
    /// The stage the markers belong to; markers of another stage are stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Steps of this stage attempt that completed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub done: BTreeSet<String>,
    /// The manual-cleanup-done annotation was absent after the last cleanup failure, so its
    /// appearance is a fresh acknowledgement (LCA removes the annotation; ibu never edits the
    /// user's file, so it reacts to the annotation being added instead).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual_cleanup_armed: bool,
}

impl Progress {
    pub fn is_done(&self, stage: Stage, step: &str) -> bool {
        self.stage == Some(stage) && self.done.contains(step)
    }

    pub fn mark_done(&mut self, stage: Stage, step: &str) {
        if self.stage != Some(stage) {
            self.stage = Some(stage);
            self.done.clear();
        }
        self.done.insert(step.to_string());
    }

    /// Forget everything: a new stage attempt starts.
    pub fn reset(&mut self, stage: Option<Stage>) {
        *self = Progress {
            stage,
            ..Progress::default()
        };
    }
}

/// The upgrade ibu is working towards, fixed when Prep starts (so that a later edit of the
/// desired seed cannot change which stateroot counts as "new").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// The stateroot the seed is (or will be) deployed in.
    pub stateroot: String,
    pub version: String,
    pub image: String,
    /// The seed as inspected (its labels were read without pulling it): every later fetch
    /// uses this manifest digest, so a tag moved in the registry cannot mix two seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedRecord>,
    /// The deployment Prep made in the new stateroot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentRecord>,
}

/// What Prep learned from the seed's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRecord {
    pub manifest_digest: String,
    pub info: crate::seed::format::SeedInfo,
}

/// The deployment Prep made in the new stateroot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentRecord {
    pub checksum: String,
    pub serial: i32,
}

/// How the pivot boots the new stateroot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PivotMode {
    /// The bootloader starts the new stateroot **once** (syslinux's boot-once); the old one
    /// stays the default until ibu, running in the new stateroot, makes the new one the
    /// default. A new stateroot that never reaches userspace falls back to the old one.
    Trial,
    /// The new deployment is made the default before the reboot (LCA's way; bootloaders
    /// without a boot-once ibu can drive).
    Default,
}

/// A reboot ibu asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RebootRecord {
    /// The boot in which the reboot was requested; a different boot id means it happened.
    pub boot_id: String,
    pub requested: Timestamp,
}

/// A rollback in flight, manual (stage Rollback) or automatic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRecord {
    /// `Some(LCA's message)` for an automatic rollback, `None` for a requested one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootRecord>,
}

/// What the Upgrade stage must remember across runs and across the pivot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeRecord {
    /// The stateroot booted when Upgrade started: the rollback target.
    pub old_stateroot: String,
    pub old_deployment: DeploymentRecord,
    /// How the pivot boots the new stateroot, decided by the `Pivot` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pivot: Option<PivotMode>,
    /// The pivot reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootRecord>,
    /// The extra manifests' waves staged into the new stateroot, in apply order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_waves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
}

/// Everything in `state.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recorded {
    #[serde(default)]
    pub format: u32,
    /// Increases by one whenever the normalised desired state changes.
    #[serde(default)]
    pub generation: i64,
    /// Digest of the desired state counted by `generation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
    /// The desired state as last accepted (for rules about what may not change mid-stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Desired>,
    /// Set from Prep until the node is Idle again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// Set from the start of Upgrade until the node is Idle again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeRecord>,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub progress: Progress,
}

impl Recorded {
    /// Read the state file; a missing file is a fresh node. A present but unreadable file is an
    /// error: starting over would make status lie about what was done.
    pub fn load(path: &Path) -> Result<Recorded> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recorded::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let r: Recorded = serde_yaml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid ibu state file; it was not written by this ibu or was \
                 edited by hand",
                path.display()
            )
        })?;
        if r.format > STATE_FORMAT {
            anyhow::bail!(
                "{} has state format {}, newer than this ibu understands ({STATE_FORMAT})",
                path.display(),
                r.format
            );
        }
        Ok(r)
    }

    /// Write the state file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_dir_all(dir, 0o755)?;
        }
        let mut me = self.clone();
        me.format = STATE_FORMAT;
        let mut text =
            String::from("# ibu state: written by ibu, do not edit (see `ibu status`)\n");
        text.push_str(&serde_yaml::to_string(&me).context("serializing state")?);
        crate::fsutil::write_atomic(path, text.as_bytes(), 0o644)
    }

    /// The generation for `desired`: unchanged if its digest matches, else one more.
    pub fn next_generation(&self, desired: &Desired) -> (i64, String) {
        let digest = desired.spec_digest();
        if self.spec_digest.as_deref() == Some(digest.as_str()) {
            (self.generation.max(1), digest)
        } else {
            (self.generation + 1, digest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::conditions::Ctx;

    #[test]
    fn round_trip_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lib/ibu/state.yaml");
        assert_eq!(Recorded::load(&p).unwrap(), Recorded::default());
        let mut r = Recorded::default();
        let (g, digest) = r.next_generation(&Desired::idle());
        r.generation = g;
        r.spec_digest = Some(digest);
        r.accepted = Some(Desired::idle());
        r.status.reset_to_idle(Ctx {
            generation: g,
            now: Timestamp::from_unix(1_700_000_000),
        });
        r.progress.mark_done(Stage::Prep, "PrepChecks");
        r.save(&p).unwrap();
        let mut back = Recorded::load(&p).unwrap();
        back.format = 0;
        assert_eq!(back, r);
    }

    #[test]
    fn generation_bumps_only_on_change() {
        let mut r = Recorded::default();
        let mut d = Desired::idle();
        let (g1, dig1) = r.next_generation(&d);
        assert_eq!(g1, 1);
        r.generation = g1;
        r.spec_digest = Some(dig1);
        assert_eq!(r.next_generation(&d).0, 1);
        d.manual_cleanup_done = true;
        assert_eq!(r.next_generation(&d).0, 1, "annotation does not bump");
        d.stage = Stage::Prep;
        assert_eq!(r.next_generation(&d).0, 2);
    }

    #[test]
    fn garbage_state_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.yaml");
        std::fs::write(&p, "status: [1, 2").unwrap();
        let e = format!("{:#}", Recorded::load(&p).unwrap_err());
        assert!(e.contains("not a valid ibu state file"), "{e}");
    }

    #[test]
    fn markers_of_another_stage_are_stale() {
        let mut p = Progress::default();
        p.mark_done(Stage::Prep, "A");
        assert!(p.is_done(Stage::Prep, "A"));
        assert!(!p.is_done(Stage::Upgrade, "A"));
        p.mark_done(Stage::Upgrade, "B");
        assert!(!p.is_done(Stage::Prep, "A"));
    }
}
