//! The steps around the pivot: the auto-rollback configuration and init monitor, ibu's state
//! in the other stateroot, the boot order, and the reboot.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{NewRoot, copy_entry, remove_if_exists, run, workspace_in};
use crate::bootloader;
use crate::plan::{Outcome, StepData};
use crate::spec::Stage;
use crate::stateroot;
use crate::status::store::{DeploymentRecord, PivotMode, Recorded};
use crate::steps::Env;

pub const MONITOR_TIMER: &str = "ibu-init-monitor.timer";
pub const MONITOR_SERVICE: &str = "ibu-init-monitor.service";
const MONITOR_TIMER_UNIT: &str = include_str!("../../../units/ibu-init-monitor.timer");
const MONITOR_SERVICE_UNIT: &str = include_str!("../../../units/ibu-init-monitor.service");
/// The auto-rollback configuration in the new stateroot's workspace.
pub const AUTO_ROLLBACK_FILE: &str = "auto-rollback.yaml";

/// LCA's auto-rollback configuration (`{monitor_enabled, monitor_timeout, enabled_components}`).
#[derive(Debug, Serialize)]
struct AutoRollbackConfig {
    monitor_enabled: bool,
    monitor_timeout: u64,
    enabled_components: Components,
}

#[derive(Debug, Serialize)]
struct Components {
    /// Post-reboot configuration (the pivot and the identity).
    config: bool,
    /// The rest of the post-pivot work (manifests, restores, completion).
    postpivot: bool,
}

/// `WriteAutoRollback`: the configuration, and the init monitor enabled in the new deployment
/// when it is on.
pub fn write_auto_rollback(env: &Env<'_>, new: &NewRoot) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    let ar = &env.desired.auto_rollback;
    let cfg = AutoRollbackConfig {
        monitor_enabled: ar.init_monitor,
        monitor_timeout: ar.init_monitor_timeout_seconds,
        enabled_components: Components {
            config: ar.post_reboot_config,
            postpivot: ar.upgrade_completion,
        },
    };
    let ws = workspace_in(&new.var);
    crate::fsutil::create_dir_all(&ws, 0o700)?;
    let text = serde_yaml::to_string(&cfg).context("serializing the auto-rollback config")?;
    crate::fsutil::write_atomic(&ws.join(AUTO_ROLLBACK_FILE), text.as_bytes(), 0o644)?;
    let units = super::inside(&new.etc, Path::new("systemd/system"))?;
    remove_monitor(&units)?;
    if !ar.init_monitor {
        return Ok(Outcome::Succeeded {
            message: "auto-rollback configured; the init monitor is disabled".into(),
        });
    }
    crate::fsutil::create_dir_all(&units, 0o755)?;
    crate::fsutil::write_atomic(
        &units.join(MONITOR_TIMER),
        MONITOR_TIMER_UNIT.as_bytes(),
        0o644,
    )?;
    crate::fsutil::write_atomic(
        &units.join(MONITOR_SERVICE),
        MONITOR_SERVICE_UNIT.as_bytes(),
        0o644,
    )?;
    let dropin = units.join(format!("{MONITOR_TIMER}.d"));
    crate::fsutil::create_dir_all(&dropin, 0o755)?;
    crate::fsutil::write_atomic(
        &dropin.join("timeout.conf"),
        format!(
            "# Written by ibu: spec.autoRollbackOnFailure.initMonitorTimeoutSeconds\n[Timer]\nOnBootSec=\nOnBootSec={}s\n",
            ar.init_monitor_timeout_seconds
        )
        .as_bytes(),
        0o644,
    )?;
    let wants = units.join("timers.target.wants");
    crate::fsutil::create_dir_all(&wants, 0o755)?;
    std::os::unix::fs::symlink(format!("../{MONITOR_TIMER}"), wants.join(MONITOR_TIMER))
        .context("enabling the init monitor")?;
    Ok(Outcome::Succeeded {
        message: format!(
            "auto-rollback configured; init monitor enabled in stateroot {} ({}s after boot)",
            new.stateroot, ar.init_monitor_timeout_seconds
        ),
    })
}

/// Remove the init monitor's units from the unit directory `units`.
fn remove_monitor(units: &Path) -> Result<()> {
    for p in [
        units.join("timers.target.wants").join(MONITOR_TIMER),
        units.join(MONITOR_TIMER),
        units.join(MONITOR_SERVICE),
        units.join(format!("{MONITOR_TIMER}.d")),
    ] {
        remove_if_exists(&p)?;
    }
    Ok(())
}

/// `recorded` with `step` marked done, saved as the state file of the stateroot whose `/var`
/// is `var`; and the booted system's `/etc/ibu` (the desired state and its drop-ins) copied
/// into `etc/ibu`.
fn save_into(env: &Env<'_>, etc: &Path, var: &Path, stage: Stage, step: &str) -> Result<()> {
    copy_entry(
        &env.paths.config_dir(),
        &super::inside(etc, Path::new("ibu"))?,
    )
    .context("copying ibu's desired state")?;
    let mut rec: Recorded = env.recorded.clone();
    rec.progress.mark_done(stage, step);
    let state = super::inside(var, Path::new("lib/ibu/state.yaml"))?;
    rec.save(&state)
        .with_context(|| format!("saving ibu's state to {}", state.display()))
}

/// `SaveState`: status and desired state into the new stateroot.
pub fn save_state(env: &Env<'_>, new: &NewRoot) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    save_into(
        env,
        &new.etc,
        &new.var,
        Stage::Upgrade,
        crate::plan::STEP_SAVE_STATE,
    )?;
    Ok(Outcome::Succeeded {
        message: format!(
            "ibu's status and desired state saved in stateroot {}",
            new.stateroot
        ),
    })
}

/// `RollbackSaveState`: status and desired state into the old stateroot.
pub fn rollback_save_state(env: &Env<'_>, old: &NewRoot) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    let stage = if env.recorded.status.is_stage_in_progress(Stage::Rollback) {
        Stage::Rollback
    } else {
        Stage::Upgrade
    };
    save_into(
        env,
        &old.etc,
        &old.var,
        stage,
        crate::plan::STEP_ROLLBACK_SAVE_STATE,
    )?;
    Ok(Outcome::Succeeded {
        message: format!(
            "ibu's status and desired state saved in stateroot {}",
            old.stateroot
        ),
    })
}

/// `Pivot`: the new deployment boots next — once (syslinux), or as the default.
pub fn pivot(env: &Env<'_>, stateroot_name: &str, d: &DeploymentRecord) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    if bootloader::boot_once_supported(env.paths) {
        let entry = stateroot::boot_entry(env.paths, stateroot_name, d)?;
        bootloader::arm_trial(env.paths, &entry)?;
        return Ok(Outcome::Produced {
            message: format!(
                "the bootloader starts stateroot {stateroot_name} once ({}); the old \
                 stateroot stays the default until the new one is up",
                bootloader::TRIAL_LABEL
            ),
            data: StepData::Pivot(PivotMode::Trial),
        });
    }
    stateroot::make_default(env.paths, stateroot_name, d)?;
    Ok(Outcome::Produced {
        message: format!(
            "stateroot {stateroot_name} is the default; the old one stays deployed as the \
             rollback target"
        ),
        data: StepData::Pivot(PivotMode::Default),
    })
}

/// `CommitPivot` / `RollbackSetDefault`: `d` first in the boot order, no trial armed.
pub fn set_default(env: &Env<'_>, stateroot_name: &str, d: &DeploymentRecord) -> Result<Outcome> {
    let changed = stateroot::make_default(env.paths, stateroot_name, d)?;
    bootloader::disarm_trial(env.paths)?;
    Ok(Outcome::Succeeded {
        message: if changed {
            format!("stateroot {stateroot_name} is the default")
        } else {
            format!("stateroot {stateroot_name} was already the default")
        },
    })
}

/// `FinishUpgrade`: the init monitor and the auto-rollback configuration removed.
pub fn finish(env: &Env<'_>) -> Result<Outcome> {
    let units = env.paths.etc.join("systemd/system");
    if !env.paths.is_sandbox() && units.join(MONITOR_TIMER).exists() {
        run(std::process::Command::new("systemctl").args(["stop", MONITOR_TIMER]))?;
    }
    remove_monitor(&units)?;
    if !env.paths.is_sandbox() {
        // systemd drops the removed units at its next reload. Ask for it without waiting for
        // it (`systemctl daemon-reload` has no such option): a reload reruns every generator,
        // seconds in the VM, all of them added to the upgrade's downtime, and nothing here
        // needs it done — the timer is stopped already, and a monitor that fired anyway would
        // find the upgrade complete and nothing to roll back.
        run(std::process::Command::new("busctl").args([
            "call",
            "--expect-reply=no",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Reload",
        ]))?;
    }
    remove_if_exists(&env.paths.workspace().join(AUTO_ROLLBACK_FILE))?;
    Ok(Outcome::Succeeded {
        message: "init monitor removed; upgrade completed".into(),
    })
}

/// `Reboot`.
pub fn reboot(env: &Env<'_>, message: &str) -> Result<Outcome> {
    crate::reboot::request(env.paths, message)?;
    Ok(Outcome::Succeeded {
        message: format!("reboot requested: {message}"),
    })
}
