//! Scenario 1, first boot: Ignition creates and mounts the shared partition; ibu runs at boot
//! and is Idle. Then ibu's units on a real systemd: ibu.path starts ibu.service when the
//! desired state changes, an invalid document fails the unit with exit 2, and a step (exit 75)
//! makes systemd run ibu again. Last, the harness's reboot and power cut, and what every later
//! boot must show (no Ignition, the partition mounted, ibu Idle).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;

use crate::guest::message_id::{CONVERGED, SPEC_REJECTED};
use crate::guest::{
    self, condition, find_condition, findmnt, ibu_status, unit_props, wait_for_run,
};
use crate::harness::Harness;
use crate::report::{note, step};

const IBU_RUN: Duration = Duration::from_secs(300);

pub fn run(h: &Harness) -> Result<()> {
    let vm = h.provision("node", vec![])?;
    let boot = vm.boots().first().cloned().context("no boot recorded")?;

    step("the old OS (1.0.0) is booted from stateroot debian", || {
        ensure!(boot.version == "1.0.0", "booted version {}", boot.version);
        ensure!(
            boot.stateroot() == h.images.stateroot(),
            "booted {}",
            boot.ostree
        );
        let status = vm.ssh("ostree admin status")?;
        let booted = format!("* {} {}.0", h.images.stateroot(), h.images.commit());
        ensure!(
            status.contains(&booted),
            "expected `{booted}` in:\n{status}"
        );
        ensure!(
            status.contains("Version: 1.0.0"),
            "no Version: 1.0.0 in:\n{status}"
        );
        Ok(())
    })?;

    step(
        "Ignition ran in the initramfs, and its first-boot kernel arguments are gone",
        || {
            let ignition = vm.ssh("journalctl -b -o cat SYSLOG_IDENTIFIER=ignition")?;
            for stage in ["disks", "mount", "files"] {
                ensure!(
                    ignition.contains(&format!("Stage: {stage}")),
                    "Ignition's {stage} stage is not in the journal:\n{ignition}"
                );
            }
            let cmdline = vm.ssh("cat /proc/cmdline")?;
            ensure!(
                cmdline.contains("ignition.firstboot"),
                "first boot without ignition.firstboot: {cmdline}"
            );
            // The boot entry, and the extlinux menu ostree made from it (what extlinux reads).
            let entries = vm.ssh(
                "grep -h ^options /boot/loader/entries/*.conf; grep APPEND /boot/loader/syslinux.cfg",
            )?;
            ensure!(
                !entries.contains("ignition."),
                "the next boot would run Ignition again: {entries}"
            );
            Ok(())
        },
    )?;

    step(
        "/var/lib/containers is the separate xfs partition varlibcontainers with prjquota",
        || {
            let m = findmnt(&vm, "/var/lib/containers")?;
            let partition = vm.ssh("readlink -f /dev/disk/by-partlabel/varlibcontainers")?;
            ensure!(
                m.source == partition.trim(),
                "mounted from {} not {}",
                m.source,
                partition.trim()
            );
            ensure!(m.fstype == "xfs", "filesystem {}", m.fstype);
            ensure!(
                m.options.iter().any(|o| o == "prjquota"),
                "options {:?}",
                m.options
            );
            let disk = vm.ssh(&format!("lsblk -no PKNAME {}", m.source))?;
            let root = vm.ssh("lsblk -no PKNAME $(findmnt -no SOURCE /sysroot)")?;
            ensure!(
                disk.trim() == root.trim(),
                "partition on {} not on the root disk {}",
                disk.trim(),
                root.trim()
            );
            let unit = unit_props(
                &vm,
                "var-lib-containers.mount",
                &["ActiveState", "FragmentPath"],
            )?;
            ensure!(unit["ActiveState"] == "active", "{unit:?}");
            // While mounted, systemd shows the device it resolved; the unit names the partlabel.
            let what = vm.ssh(&format!("grep '^What=' {}", unit["FragmentPath"]))?;
            ensure!(
                what.trim() == "What=/dev/disk/by-partlabel/varlibcontainers",
                "{what}"
            );
            note(&format!(
                "  {} xfs {} ({})",
                m.source,
                m.options.join(","),
                unit["FragmentPath"]
            ));
            Ok(())
        },
    )?;

    step(
        "ibu is the binary under test, at /usr/local/bin/ibu",
        || {
            let sum = vm.ssh("sha256sum /usr/local/bin/ibu")?;
            let want = h.ibu_sha256()?;
            ensure!(sum.starts_with(&want), "guest has {sum}, built {want}");
            let real = vm.ssh("readlink -f /usr/local/bin/ibu")?;
            ensure!(real.trim() == "/var/usrlocal/bin/ibu", "{real}");
            Ok(())
        },
    )?;

    let first = step("ibu.service ran at boot and exited 0", || {
        let enabled = vm.ssh("systemctl is-enabled ibu.service ibu.path")?;
        ensure!(enabled.lines().all(|l| l == "enabled"), "{enabled}");
        let run = wait_for_run(&vm, "ibu.service", None, IBU_RUN)?;
        ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
        Ok(run)
    })?;

    step("ibu status says Idle", || {
        let status = ibu_status(&vm)?;
        ensure!(
            condition(&status, "Idle").as_deref() == Some("True"),
            "{status:#}"
        );
        Ok(())
    })?;

    step("ibu logs to journald with its structured fields", || {
        let entries = guest::journal(&vm, "-b SYSLOG_IDENTIFIER=ibu")?;
        let with_id: Vec<&Json> = entries
            .iter()
            .filter(|e| e.get("MESSAGE_ID").is_some())
            .collect();
        ensure!(
            !with_id.is_empty(),
            "no entry of ibu with a MESSAGE_ID: {entries:#?}"
        );
        for e in &with_id {
            note(&format!(
                "  MESSAGE_ID={} STAGE={} PRIORITY={} MESSAGE={}",
                e["MESSAGE_ID"].as_str().unwrap_or("?"),
                e.get("STAGE").and_then(Json::as_str).unwrap_or("-"),
                e["PRIORITY"].as_str().unwrap_or("?"),
                e["MESSAGE"].as_str().unwrap_or("?"),
            ));
        }
        let converged = with_id.iter().find(|e| e["MESSAGE_ID"] == CONVERGED);
        ensure!(
            converged.is_some_and(|e| e.get("STAGE").is_some_and(|s| s == "Idle")),
            "no CONVERGED entry with STAGE=Idle"
        );
        Ok(())
    })?;

    let edited = step(
        "editing /etc/ibu/upgrade.yaml starts ibu.service (ibu.path)",
        || {
            guest::write_file(
                &vm,
                "/etc/ibu/upgrade.yaml",
                &idle_doc("edited by the VM test"),
            )?;
            let run = wait_for_run(&vm, "ibu.service", Some(&first.invocation), IBU_RUN)?;
            ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
            Ok(run)
        },
    )?;

    let invalid = step(
        "an invalid document fails ibu.service with exit 2, the error in the journal",
        || {
            let bad = idle_doc("a typo follows").replace("  stage: Idle", "  stag: Idle");
            guest::write_file(&vm, "/etc/ibu/upgrade.yaml", &bad)?;
            let run = wait_for_run(&vm, "ibu.service", Some(&edited.invocation), IBU_RUN)?;
            ensure!(
                run.active_state == "failed" && run.exit_status == 2,
                "{run:?}"
            );
            // ibu's own entries (journald's native protocol), newest last.
            let entries = guest::journal(&vm, "-b SYSLOG_IDENTIFIER=ibu")?;
            let rejected = entries
                .iter()
                .rev()
                .find(|e| {
                    e["MESSAGE"]
                        .as_str()
                        .is_some_and(|m| m.contains("spec.stag: unknown field"))
                })
                .with_context(|| format!("no rejection in ibu's journal: {entries:#?}"))?;
            ensure!(rejected["MESSAGE_ID"] == SPEC_REJECTED, "{rejected:#}");
            ensure!(rejected["PRIORITY"] == "3", "not an error: {rejected:#}");
            note(&format!(
                "  PRIORITY=3 MESSAGE_ID={SPEC_REJECTED} MESSAGE={}",
                rejected["MESSAGE"].as_str().unwrap_or_default()
            ));
            // journald attributes a native entry to its unit only if it can still see the
            // sending process; report what it did for this short run.
            note(&format!(
                "  _SYSTEMD_UNIT={} _SYSTEMD_INVOCATION_ID={} (the run's: {})",
                rejected
                    .get("_SYSTEMD_UNIT")
                    .and_then(Json::as_str)
                    .unwrap_or("(missing)"),
                rejected
                    .get("_SYSTEMD_INVOCATION_ID")
                    .and_then(Json::as_str)
                    .unwrap_or("(missing)"),
                run.invocation
            ));
            Ok(run)
        },
    )?;

    let prep = step(
        "a step (exit 75) makes systemd run ibu again: Prep's checks, then Prep fails on an unreachable seed",
        || {
            vm.ssh("systemctl reset-failed ibu.service")?;
            let loaded = unit_props(
                &vm,
                "ibu.service",
                &[
                    "Type",
                    "Restart",
                    "RestartForceExitStatus",
                    "SuccessExitStatus",
                    "RestartUSec",
                ],
            )?;
            ensure!(loaded["Type"] == "exec", "{loaded:?}");
            ensure!(
                loaded["RestartForceExitStatus"]
                    .split_whitespace()
                    .any(|s| s == "75"),
                "{loaded:?}"
            );
            ensure!(loaded["RestartUSec"] == "500ms", "{loaded:?}");
            // Prep's checks run as a step (exit 75), then the seed inspection fails: the seed
            // names registry.example.com, which this VM cannot reach. Prep failed (exit 3).
            guest::write_file(&vm, "/etc/ibu/upgrade.yaml", PREP_DOC)?;
            let run = wait_for_run(&vm, "ibu.service", Some(&invalid.invocation), IBU_RUN)?;
            let exits = vm.ssh(
            "journalctl -o cat -b -u ibu.service | grep -E 'Main process exited|Scheduled restart' || true",
        )?;
            note(&format!(
                "  NRestarts={}, last run exited {}; systemd said:",
                run.restarts, run.exit_status
            ));
            for line in exits.lines() {
                note(&format!("    {line}"));
            }
            ensure!(
                run.restarts >= 1,
                "ibu.service was not restarted: {run:?}\n{exits}"
            );
            ensure!(run.result == "success" && run.exit_status == 3, "{run:?}");
            let status = ibu_status(&vm)?;
            // LCA's shape: PrepCompleted says "Prep failed", PrepInProgress says why.
            let cond = |kind: &str| find_condition(&status, kind).cloned().unwrap_or_default();
            let (completed, in_progress) = (cond("PrepCompleted"), cond("PrepInProgress"));
            note(&format!(
                "  PrepCompleted {} {}: {}; PrepInProgress {} {}: {}",
                completed["status"],
                completed["reason"],
                completed["message"],
                in_progress["status"],
                in_progress["reason"],
                in_progress["message"]
            ));
            ensure!(
                completed["reason"] == "Failed"
                    && in_progress["reason"] == "Failed"
                    && in_progress["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("registry.example.com")),
                "{status:#}"
            );
            let checks = status["status"]["checks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in &checks {
                note(&format!(
                    "  check {} {}: {}",
                    c["name"].as_str().unwrap_or("?"),
                    c["result"].as_str().unwrap_or("?"),
                    c["message"].as_str().unwrap_or("")
                ));
            }
            ensure!(
                checks
                    .iter()
                    .any(|c| c["name"] == "ContainerStorageMount" && c["result"] == "Passed"),
                "ContainerStorageMount did not pass on the real partition: {status:#}"
            );
            Ok(run)
        },
    )?;

    step(
        "stage Idle aborts Prep and ibu converges to Idle again",
        || {
            vm.ssh("ibu set-stage Idle")?;
            let run = wait_for_run(&vm, "ibu.service", Some(&prep.invocation), IBU_RUN)?;
            ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
            let status = ibu_status(&vm)?;
            ensure!(
                condition(&status, "Idle").as_deref() == Some("True"),
                "{status:#}"
            );
            Ok(())
        },
    )?;

    // The harness's reboot and power cut, and what must hold on every later boot.
    step(
        "after a reboot: no Ignition, the partition mounted, ibu Idle",
        || {
            let boot = vm.reboot()?;
            ensure!(
                boot.version == "1.0.0" && boot.stateroot() == "debian",
                "{boot:?}"
            );
            let cmdline = vm.ssh("cat /proc/cmdline")?;
            ensure!(
                !cmdline.contains("ignition."),
                "Ignition's arguments are back: {cmdline}"
            );
            let ignition = vm.ssh("journalctl -b -o cat SYSLOG_IDENTIFIER=ignition | wc -l")?;
            ensure!(
                ignition.trim() == "0",
                "Ignition ran again ({} lines)",
                ignition.trim()
            );
            after_boot_checks(&vm)
        },
    )?;

    step(
        "after a power cut: boots, the partition mounted, ibu Idle",
        || {
            vm.power_off()?;
            let boot = vm.power_on()?;
            ensure!(
                boot.version == "1.0.0" && boot.stateroot() == "debian",
                "{boot:?}"
            );
            after_boot_checks(&vm)
        },
    )?;

    Ok(())
}

/// What every boot of a provisioned node shows.
fn after_boot_checks(vm: &crate::vm::Vm) -> Result<()> {
    let m = findmnt(vm, "/var/lib/containers")?;
    ensure!(
        m.fstype == "xfs" && m.options.iter().any(|o| o == "prjquota"),
        "{m:?}"
    );
    let run = wait_for_run(vm, "ibu.service", None, IBU_RUN)?;
    ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
    let status = ibu_status(vm)?;
    ensure!(
        condition(&status, "Idle").as_deref() == Some("True"),
        "{status:#}"
    );
    Ok(())
}

fn idle_doc(comment: &str) -> String {
    format!(
        "# {comment}\napiVersion: lca.openshift.io/v1\nkind: ImageBasedUpgrade\nmetadata:\n  name: upgrade\nspec:\n  stage: Idle\n"
    )
}

const PREP_DOC: &str = "apiVersion: lca.openshift.io/v1
kind: ImageBasedUpgrade
metadata:
  name: upgrade
  annotations:
    image-cleanup.lca.openshift.io/disk-usage-threshold-percent: \"0\"
spec:
  stage: Prep
  seedImageRef:
    image: registry.example.com/seeds/ibu-vm:1.1.0
    version: 1.1.0
";
