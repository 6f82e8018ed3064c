//! Status: what ibu observed and did, in the shape of LCA's `ImageBasedUpgrade.status`.
//!
//! Fleet tools decide that an action is done by reading exactly `PrepCompleted`, `UpgradeCompleted`,
//! `RollbackCompleted` or `Idle` with status `"True"`, so the condition types, reasons and
//! messages are LCA's own. ibu adds two fields LCA does not have (`checks`, `lastStep`), both
//! documented in the README, so that a human can see what ibu checked and did last.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::Stage;

pub mod conditions;
pub mod history;
pub mod store;
mod time;

pub use time::Timestamp;

/// Condition types (LCA's `ConditionTypes`, IBU subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionType {
    Idle,
    PrepInProgress,
    PrepCompleted,
    UpgradeInProgress,
    UpgradeCompleted,
    RollbackInProgress,
    RollbackCompleted,
    /// SeedGenerator (`ibu seed create`) conditions.
    SeedGenInProgress,
    SeedGenCompleted,
}

impl ConditionType {
    /// The "in progress" condition of a stage (`Idle` for Idle).
    pub fn in_progress(stage: Stage) -> ConditionType {
        match stage {
            Stage::Idle => ConditionType::Idle,
            Stage::Prep => ConditionType::PrepInProgress,
            Stage::Upgrade => ConditionType::UpgradeInProgress,
            Stage::Rollback => ConditionType::RollbackInProgress,
        }
    }

    /// The "completed" condition of a stage (`Idle` for Idle).
    pub fn completed(stage: Stage) -> ConditionType {
        match stage {
            Stage::Idle => ConditionType::Idle,
            Stage::Prep => ConditionType::PrepCompleted,
            Stage::Upgrade => ConditionType::UpgradeCompleted,
            Stage::Rollback => ConditionType::RollbackCompleted,
        }
    }
}

/// Condition reasons (LCA's `ConditionReasons`, IBU subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Reason {
    Idle,
    Completed,
    Failed,
    InProgress,
    Aborting,
    AbortFailed,
    Finalizing,
    FinalizeFailed,
    InvalidTransition,
    Blocked,
}

/// A condition's status: Kubernetes spells booleans as the strings "True" and "False".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// One entry of `status.conditions` (Kubernetes `metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub status: ConditionStatus,
    pub reason: Reason,
    pub message: String,
    pub last_transition_time: Timestamp,
    pub observed_generation: i64,
}

/// Timing of one phase of a stage (`Stateroot`, `Precache`, `PrePivot`, `PostPivot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Phase {
    pub phase: String,
    pub start_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
}

/// Timing of one stage; `completionTime` only once it completed successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageHistory {
    pub stage: Stage,
    pub start_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
}

/// Result of one check (ibu extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CheckResult {
    Passed,
    Failed,
    Warning,
    Skipped,
}

/// One check ibu ran for the current stage (ibu extension), e.g. `ContainerStorageMount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub result: CheckResult,
    pub message: String,
    pub time: Timestamp,
}

/// How the last mutating step ended (ibu extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StepResult {
    Succeeded,
    Failed,
}

/// The last mutating step ibu ran (ibu extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepRecord {
    pub name: String,
    pub stage: Stage,
    pub result: StepResult,
    pub message: String,
    pub start_time: Timestamp,
    pub completion_time: Timestamp,
}

/// `status` of the ImageBasedUpgrade document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    /// The generation of the desired state this status reflects.
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Stages the desired stage may move to from here.
    #[serde(default)]
    pub valid_next_stages: Vec<Stage>,
    #[serde(default)]
    pub history: Vec<StageHistory>,
    /// ibu extension: checks of the current stage and their results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// ibu extension: the last mutating step and its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<StepRecord>,
}
