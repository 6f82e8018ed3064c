//! `ibu seed create`'s status, in the shape of LCA's `SeedGenerator` (`seedimage`) resource.
//!
//! Written to `/var/lib/ibu/seedgen.yaml` (atomically, like the upgrade state) as the creation
//! goes, so that `ibu seed status` — or a fleet tool reading the file — sees the same conditions
//! LCA reports: `SeedGenInProgress` with the step in progress, then `SeedGenCompleted` True
//! "Seed Generation completed", or False "Seed generation failed: <why>".

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::status::conditions::set;
use crate::status::{Condition, ConditionType, Reason, Timestamp};

pub const SEED_GEN_COMPLETED: &str = "Seed Generation completed";
pub const SEED_GEN_FAILED: &str = "Seed generation failed";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedGenSpec {
    pub seed_image: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedGenStatus {
    pub observed_generation: i64,
    pub conditions: Vec<Condition>,
}

/// The whole `SeedGenerator` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedGenerator {
    pub api_version: String,
    pub kind: String,
    pub metadata: SeedGenMeta,
    pub spec: SeedGenSpec,
    pub status: SeedGenStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedGenMeta {
    pub name: String,
    pub generation: i64,
}

/// A seed creation's status, saved on every change.
pub struct SeedGenRecorder {
    path: PathBuf,
    pub doc: SeedGenerator,
}

impl SeedGenRecorder {
    /// Start a new creation: generation one more than the last one recorded at `path`.
    pub fn start(path: &Path, seed_image: &str) -> Result<SeedGenRecorder> {
        let generation = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_yaml::from_str::<SeedGenerator>(&t).ok())
            .map(|d| d.metadata.generation + 1)
            .unwrap_or(1);
        let doc = SeedGenerator {
            api_version: "lca.openshift.io/v1".into(),
            kind: "SeedGenerator".into(),
            metadata: SeedGenMeta {
                name: "seedimage".into(),
                generation,
            },
            spec: SeedGenSpec {
                seed_image: seed_image.into(),
            },
            status: SeedGenStatus {
                observed_generation: generation,
                conditions: vec![],
            },
        };
        Ok(SeedGenRecorder {
            path: path.to_path_buf(),
            doc,
        })
    }

    fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            crate::fsutil::create_dir_all(dir, 0o755)?;
        }
        let text = serde_yaml::to_string(&self.doc).context("serializing seedgen status")?;
        crate::fsutil::write_atomic(&self.path, text.as_bytes(), 0o644)
            .with_context(|| format!("recording seed creation status in {}", self.path.display()))
    }

    fn set(&mut self, kind: ConditionType, reason: Reason, status: bool, msg: &str) {
        let g = self.doc.metadata.generation;
        set(
            &mut self.doc.status.conditions,
            kind,
            reason,
            status,
            msg,
            g,
            Timestamp::now(),
        );
    }

    /// SeedGenInProgress True with what is happening now.
    pub fn in_progress(&mut self, msg: &str) -> Result<()> {
        self.set(
            ConditionType::SeedGenInProgress,
            Reason::InProgress,
            true,
            msg,
        );
        self.save()
    }

    pub fn failed(&mut self, msg: &str) -> Result<()> {
        self.set(
            ConditionType::SeedGenCompleted,
            Reason::Failed,
            false,
            &format!("{SEED_GEN_FAILED}: {msg}"),
        );
        self.set(ConditionType::SeedGenInProgress, Reason::Failed, false, msg);
        self.save()
    }

    pub fn completed(&mut self) -> Result<()> {
        self.set(
            ConditionType::SeedGenInProgress,
            Reason::Completed,
            false,
            SEED_GEN_COMPLETED,
        );
        self.set(
            ConditionType::SeedGenCompleted,
            Reason::Completed,
            true,
            SEED_GEN_COMPLETED,
        );
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ConditionStatus;

    #[test]
    fn lca_shaped_conditions_and_generations() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("seedgen.yaml");
        let mut r = SeedGenRecorder::start(&p, "reg/seed:1").unwrap();
        r.in_progress("Exporting the ostree commit").unwrap();
        r.completed().unwrap();
        let doc: SeedGenerator =
            serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let c = doc
            .status
            .conditions
            .iter()
            .find(|c| c.kind == ConditionType::SeedGenCompleted)
            .unwrap();
        assert_eq!(
            (c.status, c.reason, c.message.as_str()),
            (ConditionStatus::True, Reason::Completed, SEED_GEN_COMPLETED)
        );
        let mut r = SeedGenRecorder::start(&p, "reg/seed:2").unwrap();
        assert_eq!(r.doc.metadata.generation, 2);
        r.failed("push refused").unwrap();
        let doc: SeedGenerator =
            serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let msgs: Vec<&str> = doc
            .status
            .conditions
            .iter()
            .map(|c| c.message.as_str())
            .collect();
        assert!(
            msgs.contains(&"Seed generation failed: push refused"),
            "{msgs:?}"
        );
    }
}
