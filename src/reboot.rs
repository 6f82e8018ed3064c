//! Rebooting, the one thing a directory sysroot cannot do: the reboot seam.
//!
//! On a booted host ibu asks systemd for an orderly reboot with a message that lands in the
//! journal and on the consoles (`systemctl reboot --message=...`). With `--sysroot DIR` (tests,
//! the demo) it writes the request to `DIR/.ibu-reboot-request.yaml` instead (the message and
//! the time) and returns: the test sees the request and "reboots" by rewriting the sandbox file
//! (`.ibu-sandbox.yaml`: the deployment that boots and a new `bootId`).

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::paths::Paths;
use crate::status::Timestamp;

/// File name of the reboot request in a directory sysroot.
pub const REQUEST_FILE: &str = ".ibu-reboot-request.yaml";

/// A reboot request written in a directory sysroot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    pub message: String,
    pub requested: Timestamp,
}

/// Ask for a reboot with `message`.
pub fn request(paths: &Paths, message: &str) -> Result<()> {
    if paths.is_sandbox() {
        let r = Request {
            message: message.to_string(),
            requested: Timestamp::now(),
        };
        let text = serde_yaml::to_string(&r).context("serializing the reboot request")?;
        let p = paths.sysroot.join(REQUEST_FILE);
        return crate::fsutil::write_atomic(&p, text.as_bytes(), 0o644);
    }
    let out = std::process::Command::new("systemctl")
        .arg("reboot")
        .arg(format!("--message={message}"))
        .output()
        .context("running systemctl reboot")?;
    if !out.status.success() {
        bail!(
            "systemctl reboot failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The reboot request of a directory sysroot, if one was made (tests read it).
pub fn read_request(sysroot: &std::path::Path) -> Result<Option<Request>> {
    let p = sysroot.join(REQUEST_FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(Some(
            serde_yaml::from_str(&t).with_context(|| format!("parsing {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}
