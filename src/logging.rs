//! Logging: structured fields to journald under systemd, readable lines on stderr otherwise.
//!
//! Under systemd (stderr connected to the journal, as `JOURNAL_STREAM` says) events go to
//! journald natively so that their fields (`STAGE`, `STEP`, `MESSAGE_ID`, ...) can be queried:
//! `journalctl -u ibu MESSAGE_ID=<id>`. Elsewhere they are printed to stderr.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// journald `MESSAGE_ID`s of ibu's key events (stable; look them up with `journalctl MESSAGE_ID=`).
pub mod message_id {
    /// A step is about to run.
    pub const STEP_STARTED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c01";
    /// A step finished (successfully or with a warning).
    pub const STEP_SUCCEEDED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c02";
    /// A step failed.
    pub const STEP_FAILED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c03";
    /// The desired state is reached.
    pub const CONVERGED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c04";
    /// ibu cannot go on without a human.
    pub const BLOCKED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c05";
    /// ibu waits and will look again.
    pub const WAITING: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c06";
    /// The desired-state document was rejected.
    pub const SPEC_REJECTED: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c07";
    /// A stage transition was accepted or refused.
    pub const TRANSITION: &str = "6c1f0b0e2a8e4d9c9b3f4b1d7a2e5c08";
}

/// Is stderr the journal? (systemd sets `JOURNAL_STREAM=<dev>:<ino>` of the stream it gave us.)
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Set up logging. `verbosity`: -1 quiet (warnings), 0 info, 1 debug, 2+ trace. `IBU_LOG`
/// (an `EnvFilter` directive such as `ibu=debug`) overrides.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("IBU_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        let journald = journald
            .with_field_prefix(None)
            .with_syslog_identifier("ibu".into());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
    // On stderr the MESSAGE_ID is noise; the message and the other fields are what people read.
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "message_id" => Ok(()),
        "message" => write!(w, "{value:?}"),
        name => write!(w, " {name}={value:?}"),
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .without_time()
                .fmt_fields(fields),
        )
        .try_init();
}
