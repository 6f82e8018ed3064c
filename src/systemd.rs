//! The little ibu asks of systemd: bring it back later when it is waiting.
//!
//! `ibu.service` restarts itself after a step (exit 75); a wait must not poll, so on a wait ibu
//! (re)starts `ibu-retry.timer`, which starts `ibu.service` once, `OnActiveSec` later. A wait for
//! systemd to finish starting (the deferred health checks right after the pivot reboot) is an
//! event ibu can watch: it blocks in `systemctl is-system-running --wait` for a bounded time and
//! looks again at once, instead of adding the timer's period to the upgrade's downtime. Outside
//! systemd (a shell, tests) nothing is armed and nothing waits: the caller sees exit code 4 and
//! decides.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::child;

/// The retry timer unit shipped in `units/`.
pub const RETRY_TIMER: &str = "ibu-retry.timer";

/// Running as a systemd service? (systemd sets `INVOCATION_ID` for every unit it starts.)
pub fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

/// (Re)arm the retry timer without waiting for systemd to act on it.
pub fn arm_retry_timer() -> Result<()> {
    let sh = xshell::Shell::new().context("starting a shell for systemctl")?;
    xshell::cmd!(sh, "systemctl --no-block restart {RETRY_TIMER}")
        .quiet()
        .run()
        .with_context(|| format!("starting {RETRY_TIMER}"))
}

/// Wait until systemd has finished starting (`systemctl is-system-running --wait` returns), at
/// most `max`. Ok(true) when it has, Ok(false) when it is still starting after `max`.
pub fn wait_for_startup(max: Duration) -> Result<bool> {
    const WHAT: &str = "systemctl is-system-running --wait";
    let mut child = Command::new("systemctl")
        .args(["is-system-running", "--wait"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("running {WHAT}"))?;
    // It exits non-zero for every state but `running`; any exit means startup is over.
    let status = child::wait_with_deadline(&mut child, max)
        .with_context(|| format!("waiting for {WHAT}"))?;
    Ok(status.is_some())
}
