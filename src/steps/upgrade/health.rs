//! Health-check drop-ins, in greenboot's style.
//!
//! `/etc/ibu/health-check/required.d/*` and `/etc/ibu/health-check/wanted.d/*`: every
//! executable regular file, in name order, each with a time limit of [`TIMEOUT_SECS`]. A
//! failing (non-zero, killed, timed out) `required.d` check fails the health checks, which
//! makes Upgrade wait and try again (LCA waits for a healthy node); a failing `wanted.d` check
//! is a warning. The checks run before the pivot (old stateroot) and after it (the deferred
//! checks, in the new stateroot: `/etc/ibu` is carried across) with `IBU_HEALTH_PHASE` set to
//! `pre-pivot` or `post-pivot`. systemd's own state (`systemctl is-system-running`) is checked
//! by the planner before the drop-ins run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::child;
use crate::paths::Paths;
use crate::plan::{Outcome, Phase};

pub const TIMEOUT_SECS: u64 = 300;

/// How long a failed check's stderr is read after it exited (a process it left running may
/// keep the pipe open).
const STDERR_LINGER: Duration = Duration::from_secs(1);

/// `/etc/ibu/health-check/<kind>.d`.
pub fn dir(paths: &Paths, kind: &str) -> PathBuf {
    paths
        .config_dir()
        .join("health-check")
        .join(format!("{kind}.d"))
}

fn executables(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let md =
            std::fs::metadata(e.path()).with_context(|| format!("stat {}", e.path().display()))?;
        if md.is_file() && md.permissions().mode() & 0o111 != 0 {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Run one check: `Ok(())` or why it failed.
fn run_one(script: &Path, phase: Phase, timeout: Duration) -> Result<(), String> {
    let mut child = Command::new(script)
        .env("IBU_HEALTH_PHASE", phase.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let last_line = child.stderr.take().map(child::last_line_of);
    let status = match child::wait_with_deadline(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => return Err(format!("timed out after {}s", timeout.as_secs())),
        Err(e) => return Err(format!("waiting for it: {e}")),
    };
    if status.success() {
        return Ok(());
    }
    let last = last_line
        .map(|read| read(STDERR_LINGER))
        .unwrap_or_default();
    Err(if last.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {last}")
    })
}

pub fn run(paths: &Paths, phase: Phase) -> Result<Outcome> {
    run_with_timeout(paths, phase, Duration::from_secs(TIMEOUT_SECS))
}

pub fn run_with_timeout(paths: &Paths, phase: Phase, timeout: Duration) -> Result<Outcome> {
    let mut failed = Vec::new();
    let mut warned = Vec::new();
    let mut passed = 0usize;
    for (kind, sink) in [("required", &mut failed), ("wanted", &mut warned)] {
        for script in executables(&dir(paths, kind))? {
            let name = script
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match run_one(&script, phase, timeout) {
                Ok(()) => passed += 1,
                Err(why) => sink.push(format!("{kind} health check {name} failed ({why})")),
            }
        }
    }
    Ok(if !failed.is_empty() {
        let mut all = failed;
        all.extend(warned);
        Outcome::Failed {
            message: all.join("; "),
        }
    } else if !warned.is_empty() {
        Outcome::Warning {
            message: format!("{passed} health checks passed; {}", warned.join("; ")),
        }
    } else {
        Outcome::Succeeded {
            message: format!("{passed} health checks passed ({})", phase.as_str()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn paths(root: &Path) -> Paths {
        let mut p = Paths::host();
        p.etc = root.to_path_buf();
        p
    }

    #[test]
    fn required_fail_wanted_warn_others_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        assert_eq!(
            run(&p, Phase::PrePivot).unwrap(),
            Outcome::Succeeded {
                message: "0 health checks passed (pre-pivot)".into()
            }
        );
        let req = dir(&p, "required");
        let wanted = dir(&p, "wanted");
        script(&req, "10-ok", "test \"$IBU_HEALTH_PHASE\" = post-pivot");
        script(&wanted, "20-meh", "echo 'disk 91% full' >&2; exit 1");
        std::fs::write(req.join("README"), "not executable").unwrap();
        let o = run(&p, Phase::PostPivot).unwrap();
        assert_eq!(
            o,
            Outcome::Warning {
                message: "1 health checks passed; wanted health check 20-meh failed (exit status: 1: disk 91% full)".into()
            }
        );
        script(&req, "30-slow", "sleep 5");
        let o = run_with_timeout(&p, Phase::PostPivot, Duration::from_millis(300)).unwrap();
        let Outcome::Failed { message } = o else {
            panic!("{o:?}")
        };
        assert!(
            message.contains("required health check 30-slow failed (timed out"),
            "{message}"
        );
        assert!(message.contains("20-meh"), "{message}");
    }

    #[test]
    fn a_chatty_check_is_not_mistaken_for_a_slow_one() {
        // More on stderr than a pipe holds: the check must still end, with its last line.
        let d = tempfile::tempdir().unwrap();
        let p = paths(d.path());
        script(
            &dir(&p, "required"),
            "10-chatty",
            "seq 1 100000 >&2; echo 'etcd not ready' >&2; exit 2",
        );
        let o = run_with_timeout(&p, Phase::PrePivot, Duration::from_secs(60)).unwrap();
        assert_eq!(
            o,
            Outcome::Failed {
                message: "required health check 10-chatty failed (exit status: 2: etcd not ready)"
                    .into()
            }
        );
    }
}
