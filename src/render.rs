//! `ibu status` for people, in the spirit of `rpm-ostree status`: where the node is, what ibu
//! is doing, what comes next, and the deployments with booted/default marks.
//!
//! Rendering is a pure function of a [`View`], so its output is tested against fixed input.

use std::fmt::Write;

use crate::facts::OstreeFacts;
use crate::plan::{Decision, WakeOn};
use crate::spec::Desired;
use crate::status::store::Recorded;
use crate::status::{CheckResult, ConditionStatus, Reason, StepResult};

/// Everything `ibu status` shows.
pub struct View<'a> {
    pub desired: Result<&'a Desired, String>,
    pub recorded: &'a Recorded,
    /// What the planner would do now (or why it cannot say).
    pub next: Result<(&'a Decision, &'a [&'static str]), String>,
    pub ostree: Result<&'a OstreeFacts, String>,
}

/// One line for the stage the node is in, from the conditions.
pub fn state_line(rec: &Recorded) -> String {
    let st = &rec.status;
    if let Some(stage) = st.in_progress_stage() {
        let c = st
            .condition(crate::status::ConditionType::in_progress(stage))
            .map(|c| (c.reason, c.message.clone()));
        return match c {
            Some((reason, msg)) if stage == crate::spec::Stage::Idle => {
                format!("{reason:?}: {msg}")
            }
            Some((_, msg)) => format!("{stage} in progress: {msg}"),
            None => format!("{stage} in progress"),
        };
    }
    // The most recent condition is what `oc get ibu` shows as State/Details.
    match st.conditions.last() {
        None => "new (no status yet)".into(),
        Some(c) => {
            let stage_done = [
                ("PrepCompleted", "Prep completed"),
                ("UpgradeCompleted", "Upgrade completed"),
                ("RollbackCompleted", "Rollback completed"),
            ];
            let done = st.conditions.iter().rev().find(|c| {
                c.status == ConditionStatus::True
                    && stage_done
                        .iter()
                        .any(|(k, _)| *k == format!("{:?}", c.kind))
            });
            match (c.reason, done) {
                (Reason::Idle, _) => "Idle".into(),
                (_, Some(d)) => format!("{:?}: {}", d.kind, d.message),
                _ => format!("{:?} {:?}: {}", c.kind, c.reason, c.message),
            }
        }
    }
}

/// How a wait ends, for `ibu plan` and `ibu status`.
pub fn wake_text(wake_on: WakeOn, retry_after_secs: u64) -> String {
    match wake_on {
        WakeOn::Timer => format!("{retry_after_secs}s"),
        WakeOn::SystemStarted => {
            format!("until systemd has started, at most {retry_after_secs}s")
        }
    }
}

/// The four-letter mark of a check result in human output.
pub fn mark(r: CheckResult) -> &'static str {
    match r {
        CheckResult::Passed => "ok  ",
        CheckResult::Failed => "FAIL",
        CheckResult::Warning => "warn",
        CheckResult::Skipped => "skip",
    }
}

pub fn human(v: &View<'_>) -> String {
    let mut o = String::new();
    let rec = v.recorded;
    let st = &rec.status;
    let _ = writeln!(o, "State:    {}", state_line(rec));
    match &v.desired {
        Ok(d) => {
            let seed = d
                .seed
                .as_ref()
                .map(|s| format!(" -> {} ({})", s.version, s.image))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "Desired:  {}{seed}  [generation {}, observed {}]",
                d.stage, rec.generation, st.observed_generation
            );
        }
        Err(e) => {
            let _ = writeln!(o, "Desired:  INVALID: {e}");
        }
    }
    let next_stages: Vec<&str> = st.valid_next_stages.iter().map(|s| s.as_str()).collect();
    let _ = writeln!(
        o,
        "Valid next stages: {}",
        if next_stages.is_empty() {
            "none".to_string()
        } else {
            next_stages.join(", ")
        }
    );
    match &v.next {
        Ok((decision, upcoming)) => {
            let line = match decision {
                Decision::Run(step) => format!("{}: {}", step.name(), step.describe()),
                Decision::Wait {
                    reason,
                    retry_after_secs,
                    wake_on,
                } => format!(
                    "wait ({}): {reason}",
                    wake_text(*wake_on, *retry_after_secs)
                ),
                Decision::Blocked { reason } => format!("blocked: {reason}"),
                Decision::Converged { summary } => format!("nothing (converged: {summary})"),
            };
            let _ = writeln!(o, "Next:     {line}");
            if !upcoming.is_empty() {
                let _ = writeln!(o, "Then:     {}", upcoming.join(", "));
            }
        }
        Err(e) => {
            let _ = writeln!(o, "Next:     unknown: {e}");
        }
    }
    if let Some(t) = &rec.target {
        let _ = writeln!(o, "Target:   {} in stateroot {}", t.version, t.stateroot);
    }
    if !st.checks.is_empty() {
        let _ = writeln!(o, "Checks:");
        for c in &st.checks {
            let _ = writeln!(o, "  [{}] {:<22} {}", mark(c.result), c.name, c.message);
        }
    }
    if let Some(s) = &st.last_step {
        let _ = writeln!(
            o,
            "Last step: {} {} at {}: {}",
            s.name,
            match s.result {
                StepResult::Succeeded => "succeeded",
                StepResult::Failed => "FAILED",
            },
            s.completion_time,
            s.message
        );
    }
    let errors: Vec<String> = st
        .conditions
        .iter()
        .filter(|c| {
            matches!(
                c.reason,
                Reason::Failed
                    | Reason::AbortFailed
                    | Reason::FinalizeFailed
                    | Reason::InvalidTransition
            ) && c.message != crate::status::conditions::PREP_FAILED
                && c.message != crate::status::conditions::UPGRADE_FAILED
                && c.message != crate::status::conditions::ROLLBACK_FAILED
        })
        .map(|c| format!("{:?}: {}", c.kind, c.message))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(o, "Last error: {}", errors.join("; "));
    }
    o.push('\n');
    match &v.ostree {
        Ok(os) => {
            let _ = writeln!(o, "Deployments:");
            for d in &os.deployments {
                let mut marks = vec![];
                if d.booted {
                    marks.push("booted");
                }
                if d.default {
                    marks.push("default");
                }
                if d.staged {
                    marks.push("staged");
                }
                if d.pinned {
                    marks.push("pinned");
                }
                let _ = writeln!(
                    o,
                    "{} {} {}{}",
                    if d.booted { "*" } else { " " },
                    d.stateroot,
                    d.version.as_deref().unwrap_or("(no version)"),
                    if marks.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", marks.join(", "))
                    }
                );
                let _ = writeln!(
                    o,
                    "    Commit: {}  Serial: {}  Index: {}",
                    d.checksum, d.serial, d.index
                );
            }
            let _ = writeln!(o, "Stateroots: {}", os.stateroots.join(", "));
        }
        Err(e) => {
            let _ = writeln!(o, "Deployments: unknown: {e}");
        }
    }
    o
}

/// The whole document for machines (`ibu status -o yaml|json`): the desired document's
/// `apiVersion`, `metadata` and `spec` as written, with ibu's `status`.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub api_version: String,
    pub kind: &'static str,
    pub metadata: Metadata,
    pub spec: serde_yaml::Value,
    pub status: crate::status::Status,
}

#[derive(Debug, serde::Serialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
}

/// Build the machine-readable document. The spec is copied from the file as written (so the
/// user recognises it); when the file is absent, it is the default `{stage: Idle}`.
pub fn document(
    config: &std::path::Path,
    desired: Option<&Desired>,
    rec: &Recorded,
) -> anyhow::Result<Document> {
    let fallback = Desired::idle();
    let d = desired.unwrap_or(&fallback);
    let spec = match std::fs::read_to_string(config) {
        Ok(text) if desired.is_some() => serde_yaml::from_str::<serde_yaml::Value>(&text)
            .ok()
            .and_then(|v| v.get("spec").cloned())
            .unwrap_or(serde_yaml::Value::Null),
        _ => {
            let mut m = serde_yaml::Mapping::new();
            m.insert("stage".into(), d.stage.as_str().into());
            serde_yaml::Value::Mapping(m)
        }
    };
    Ok(Document {
        api_version: d.api_version.as_str().to_string(),
        kind: "ImageBasedUpgrade",
        metadata: Metadata {
            name: d.name.clone(),
            namespace: d.namespace.clone(),
            generation: rec.generation,
        },
        spec,
        status: rec.status.clone(),
    })
}
