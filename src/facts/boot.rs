//! Boot facts: which boot this is, how long ago it started, and how systemd says it went.
//!
//! The Upgrade stage needs them to tell a reboot from a rerun (the boot id changes with every
//! boot, so "the pivot reboot happened" is a fact, not a guess), to fire the init monitor (its
//! timeout counts from boot, like LCA's monitor, which starts at boot), and for the health
//! checks (`systemctl is-system-running`: `running` is healthy, `starting` means wait,
//! `degraded` names failed units).
//!
//! On a booted host they come from the kernel and systemd. A directory sysroot has neither, so
//! the sandbox file supplies them (`bootId`, `uptimeSeconds`, `systemState`; see
//! [`crate::paths::Sandbox`]); tests "reboot" by changing the boot id.

use anyhow::{Context, Result};
use serde::Serialize;

use super::BootFacts;
use crate::paths::Paths;

/// systemd's overall state, as `systemctl is-system-running` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemState {
    /// `running`, `degraded`, `starting`, `initializing`, `maintenance`, `stopping`, ...
    pub state: String,
    /// Units in the `failed` state.
    pub failed_units: Vec<String>,
}

impl SystemState {
    /// Parse the sandbox form `state[: unit, unit]`.
    pub fn parse(s: &str) -> SystemState {
        let (state, units) = match s.split_once(':') {
            Some((st, u)) => (st, u),
            None => (s, ""),
        };
        SystemState {
            state: state.trim().to_string(),
            failed_units: units
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Still booting: the check should wait rather than judge.
    pub fn is_settling(&self) -> bool {
        matches!(self.state.as_str(), "initializing" | "starting")
    }

    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

pub fn gather(paths: &Paths) -> Result<BootFacts> {
    if let Some(sb) = &paths.sandbox {
        return Ok(BootFacts {
            boot_id: sb.boot_id.clone().unwrap_or_else(|| "sandbox".into()),
            uptime_secs: sb.uptime_seconds.unwrap_or(0),
            system: SystemState::parse(sb.system_state.as_deref().unwrap_or("running")),
        });
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading /proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string();
    let uptime = std::fs::read_to_string("/proc/uptime").context("reading /proc/uptime")?;
    let uptime_secs = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("parsing /proc/uptime {uptime:?}"))? as u64;
    Ok(BootFacts {
        boot_id,
        uptime_secs,
        system: system_state()?,
    })
}

fn system_state() -> Result<SystemState> {
    let out = std::process::Command::new("systemctl")
        .arg("is-system-running")
        .output()
        .context("running systemctl is-system-running")?;
    // It exits non-zero for every state but `running`; the state is on stdout either way.
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut failed_units = Vec::new();
    if state == "degraded" {
        let out = std::process::Command::new("systemctl")
            .args(["list-units", "--state=failed", "--plain", "--no-legend"])
            .output()
            .context("running systemctl list-units --state=failed")?;
        failed_units = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
    }
    Ok(SystemState {
        state: if state.is_empty() {
            "unknown".into()
        } else {
            state
        },
        failed_units,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_form() {
        assert_eq!(
            SystemState::parse("degraded: a.service, b.mount"),
            SystemState {
                state: "degraded".into(),
                failed_units: vec!["a.service".into(), "b.mount".into()]
            }
        );
        let s = SystemState::parse("starting");
        assert!(s.is_settling() && !s.is_running() && s.failed_units.is_empty());
        assert!(SystemState::parse("running").is_running());
    }
}
