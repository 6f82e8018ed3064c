//! The little ibu asks of systemd: bring it back later when it is waiting.
//!
//! `ibu.service` restarts itself after a step (exit 75); a wait must not poll, so on a wait ibu
//! (re)starts `ibu-retry.timer`, which starts `ibu.service` once, `OnActiveSec` later. Outside
//! systemd (a shell, tests) nothing is armed: the caller sees exit code 4 and decides.

use anyhow::{Context, Result};

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
