//! Facts read from a guest, typed, for scenarios to assert on.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;

use crate::vm::Vm;

/// `systemctl show UNIT -p ...` as a map.
pub fn unit_props(vm: &Vm, unit: &str, props: &[&str]) -> Result<BTreeMap<String, String>> {
    let out = vm.ssh(&format!("systemctl show {unit} -p {}", props.join(",")))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// How a run of a service ended.
#[derive(Debug, Clone)]
pub struct ServiceRun {
    pub invocation: String,
    pub active_state: String,
    /// `success`, `exit-code`, ...
    pub result: String,
    pub exit_status: i32,
    pub restarts: u32,
}

const RUN_PROPS: &[&str] = &[
    "InvocationID",
    "ActiveState",
    "SubState",
    "Result",
    "ExecMainStatus",
    "NRestarts",
    "ExecMainStartTimestampMonotonic",
];

/// The last run of `unit`, if it has finished (not activating, active or about to restart).
pub fn finished_run(vm: &Vm, unit: &str) -> Result<Option<ServiceRun>> {
    let p = unit_props(vm, unit, RUN_PROPS)?;
    let get = |k: &str| p.get(k).cloned().unwrap_or_default();
    let settled = matches!(get("ActiveState").as_str(), "inactive" | "failed")
        && get("SubState") != "auto-restart";
    if !settled || get("ExecMainStartTimestampMonotonic") == "0" {
        return Ok(None);
    }
    Ok(Some(ServiceRun {
        invocation: get("InvocationID"),
        active_state: get("ActiveState"),
        result: get("Result"),
        exit_status: get("ExecMainStatus").parse().unwrap_or(-1),
        restarts: get("NRestarts").parse().unwrap_or(0),
    }))
}

/// Wait for a run of `unit` other than invocation `not` to finish.
pub fn wait_for_run(
    vm: &Vm,
    unit: &str,
    not: Option<&str>,
    timeout: Duration,
) -> Result<ServiceRun> {
    vm.wait_for(
        &format!("a finished run of {unit}"),
        timeout,
        Duration::from_secs(2),
        || {
            Ok(finished_run(vm, unit)?
                .filter(|r| Some(r.invocation.as_str()) != not && !r.invocation.is_empty()))
        },
    )
}

/// A mount as findmnt sees it.
#[derive(Debug)]
pub struct Mount {
    pub source: String,
    pub fstype: String,
    pub options: Vec<String>,
}

pub fn findmnt(vm: &Vm, target: &str) -> Result<Mount> {
    let out = vm.ssh(&format!(
        "findmnt -J -o SOURCE,FSTYPE,OPTIONS --mountpoint {target}"
    ))?;
    let j: Json = serde_json::from_str(&out).with_context(|| format!("findmnt output: {out}"))?;
    let fs = &j["filesystems"][0];
    let s = |k: &str| fs[k].as_str().unwrap_or_default().to_string();
    Ok(Mount {
        source: s("source"),
        fstype: s("fstype"),
        options: s("options").split(',').map(str::to_string).collect(),
    })
}

/// `ibu status -o json` in the guest.
pub fn ibu_status(vm: &Vm) -> Result<Json> {
    let out = vm.ssh("ibu status -o json")?;
    serde_json::from_str(&out).with_context(|| format!("ibu status -o json: {out}"))
}

/// Condition `kind` (type, status, reason, message, ...) of an ibu status document.
pub fn find_condition<'a>(status: &'a Json, kind: &str) -> Option<&'a Json> {
    status["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// The status of condition `kind` (`"True"`, `"False"`) in an ibu status document.
pub fn condition(status: &Json, kind: &str) -> Option<String> {
    find_condition(status, kind).and_then(|c| c["status"].as_str().map(str::to_string))
}

/// ibu's journald `MESSAGE_ID`s, as `src/logging.rs` defines them (the test below keeps the
/// two in step; the VM suite does not link ibu, which would pull libostree into it).
pub mod message_id {
    pub const STEP_STARTED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c01";
    pub const STEP_SUCCEEDED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c02";
    pub const CONVERGED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c04";
    pub const SPEC_REJECTED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c07";
}

/// The journal entries of `unit` in this boot, as JSON objects (`journalctl -o json`).
pub fn journal(vm: &Vm, args: &str) -> Result<Vec<Json>> {
    let out = vm.ssh(&format!("journalctl --no-pager -o json {args}"))?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("journal line: {l}")))
        .collect()
}

/// Replace a file in the guest (written to a temporary file and renamed, like an editor),
/// creating its directory if needed.
pub fn write_file(vm: &Vm, path: &str, contents: &str) -> Result<()> {
    if contents.contains("IBU_EOF") {
        bail!("contents for {path} contain the heredoc marker");
    }
    vm.ssh(&format!(
        "mkdir -p \"$(dirname {path})\" && cat > {path}.tmp <<'IBU_EOF'\n{contents}IBU_EOF\nmv {path}.tmp {path}"
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::message_id::*;

    #[test]
    fn message_ids_match_ibus() {
        let logging = std::fs::read_to_string(crate::repo_root().join("src/logging.rs")).unwrap();
        for (name, id) in [
            ("STEP_STARTED", STEP_STARTED),
            ("STEP_SUCCEEDED", STEP_SUCCEEDED),
            ("CONVERGED", CONVERGED),
            ("SPEC_REJECTED", SPEC_REJECTED),
        ] {
            assert!(
                logging.contains(&format!("pub const {name}: &str = \"{id}\";")),
                "{name} is not {id} in src/logging.rs"
            );
        }
    }
}
