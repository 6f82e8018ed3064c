//! The systemd units in `units/` are valid for the systemd ibu runs under (Debian 12: 252).
//!
//! `systemd-analyze verify` loads them in a throw-away root holding the host's unit library, the
//! units, and an executable at ibu's install path, so it checks what systemd itself would refuse
//! (e.g. `RestartForceExitStatus=` on a oneshot service) without touching the host.

use std::path::Path;

use anyhow::{Context, Result, bail};

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "cp -a {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn units_pass_systemd_analyze_verify() -> Result<()> {
    let root = tempfile::tempdir()?;
    let r = root.path();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
    std::fs::create_dir_all(r.join("usr/lib/systemd"))?;
    copy_dir(
        Path::new("/usr/lib/systemd/system"),
        &r.join("usr/lib/systemd"),
    )
    .context("the host's systemd unit library (install the systemd package)")?;
    let dest = r.join("etc/systemd/system");
    std::fs::create_dir_all(&dest)?;
    let mut names = vec![];
    for e in std::fs::read_dir(&units)? {
        let e = e?;
        std::fs::copy(e.path(), dest.join(e.file_name()))?;
        names.push(format!(
            "/etc/systemd/system/{}",
            e.file_name().to_string_lossy()
        ));
    }
    names.sort();
    assert_eq!(
        names,
        [
            "/etc/systemd/system/ibu-init-monitor.service",
            "/etc/systemd/system/ibu-init-monitor.timer",
            "/etc/systemd/system/ibu-retry.timer",
            "/etc/systemd/system/ibu.path",
            "/etc/systemd/system/ibu.service"
        ]
    );
    // The executables the units start (ibu-init-monitor.service runs systemctl).
    for exe in ["usr/local/bin/ibu", "usr/bin/systemctl"] {
        let bin = r.join(exe);
        std::fs::create_dir_all(bin.parent().unwrap())?;
        std::fs::write(&bin, "#!/bin/sh\n")?;
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", r.display()))
        .args(&names)
        .output()
        .context("running systemd-analyze (install the systemd package)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    Ok(())
}

#[test]
fn service_exit_codes_match_ibu() {
    use ibu::reconcile::Exit;
    let service =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("units/ibu.service"))
            .unwrap();
    let line = |key: &str| {
        service
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in ibu.service"))
            .to_string()
    };
    assert_eq!(
        line("SuccessExitStatus="),
        format!(
            "{} {} {}",
            Exit::Blocked as u8,
            Exit::Waiting as u8,
            Exit::Progressed as u8
        )
    );
    assert_eq!(
        line("RestartForceExitStatus="),
        (Exit::Progressed as u8).to_string()
    );
}
