//! Scenarios 3–5 on a target VM running the old OS (1.0.0):
//!
//! - `prep`: the admin edits one field of the desired state to `stage: Prep`; ibu converges by
//!   itself (ibu.path, systemd's restarts on exit 75) to PrepCompleted: the new stateroot is
//!   deployed but not default, the seed's images are precached, and the running system keeps
//!   working. Then `stage: Idle` aborts (scenario 5, on the same VM: it needs a prepared node):
//!   deployments, stateroots, refs and boot entries are as before Prep, and the node still boots
//!   the old OS.
//! - `prep-power-cut`: the same Prep with a hard power-off while ibu imports the new OS; at boot
//!   ibu resumes (ibu.service runs at boot) and completes.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::guest::message_id::{STEP_STARTED, STEP_SUCCEEDED};
use crate::guest::{self, condition, findmnt, ibu_status, wait_for_run};
use crate::harness::{Harness, Seed};
use crate::ignition::files_config;
use crate::report::{note, step, truncate};
use crate::scenarios::node::{
    self, deployments, missing_images, ostree_state, registry_config, set_stage, upgrade_doc,
};
use crate::scenarios::seed;
use crate::vm::Vm;

/// Prep downloads and imports only what the node lacks; under TCG that takes minutes.
pub(crate) const PREP: Duration = Duration::from_secs(1800);
const ABORT: Duration = Duration::from_secs(600);

/// Scenarios 3 and 5.
pub fn run(h: &Harness) -> Result<()> {
    let seed = seed::ensure(h)?;
    let vm = target(h, &seed, "edge-0")?;
    let before = step("the node's ostree state before Prep", || {
        let state = ostree_state(&vm)?;
        for line in state.lines() {
            note(&format!("  | {line}"));
        }
        Ok(state)
    })?;

    step(
        "stage: Prep (one field edited); ibu converges by itself to PrepCompleted",
        || {
            set_stage(&vm, "Prep")?;
            node::wait_for_condition(&vm, "PrepCompleted", PREP)?;
            Ok(())
        },
    )?;
    prepared_checks(&vm, &seed)?;

    step("stage: Idle aborts Prep; ibu converges to Idle", || {
        set_stage(&vm, "Idle")?;
        node::wait_for_condition(&vm, "Idle", ABORT)?;
        let run = wait_for_run(&vm, "ibu.service", None, ABORT)?;
        ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
        Ok(())
    })?;

    step(
        "deployments, stateroots, refs and boot entries are as before Prep",
        || {
            let after = ostree_state(&vm)?;
            ensure!(
                after == before,
                "the node differs from before Prep:\n--- before\n{before}\n--- after\n{after}"
            );
            // Abort keeps the precached images (LCA does too): they are the site's to clean up.
            let missing = missing_images(&vm, &seed.workloads)?;
            note(&format!(
                "  precached images still present: {}",
                seed.workloads.len() - missing.len()
            ));
            Ok(())
        },
    )?;

    step(
        "the node still boots the old OS, and ibu is Idle there",
        || {
            let boot = vm.reboot()?;
            ensure!(node::is_old_os(&boot, h.images.stateroot()), "{boot:?}");
            let run = wait_for_run(&vm, "ibu.service", None, ABORT)?;
            ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
            let status = ibu_status(&vm)?;
            ensure!(
                condition(&status, "Idle").as_deref() == Some("True"),
                "{status:#}"
            );
            ensure!(
                ostree_state(&vm)? == before,
                "the node changed over the reboot"
            );
            Ok(())
        },
    )?;
    Ok(())
}

/// Scenario 4.
pub fn run_power_cut(h: &Harness) -> Result<()> {
    let seed = seed::ensure(h)?;
    let vm = target(h, &seed, "edge-0")?;

    step(
        "stage: Prep, and a hard power-off while ibu imports the new OS",
        || {
            set_stage(&vm, "Prep")?;
            let started = vm.wait_for(
                "ibu to start the ImportOstree step",
                PREP,
                Duration::from_secs(2),
                || {
                    let entries = guest::journal(
                        &vm,
                        &format!(
                            "-b SYSLOG_IDENTIFIER=ibu MESSAGE_ID={STEP_STARTED} STEP=ImportOstree"
                        ),
                    )?;
                    Ok(entries.into_iter().next())
                },
            )?;
            note(&format!(
                "  {}",
                started["MESSAGE"].as_str().unwrap_or_default()
            ));
            // Into the download (the step fetches the missing objects in ~20 s under TCG).
            std::thread::sleep(Duration::from_secs(2));
            let finished = guest::journal(
                &vm,
                &format!("-b SYSLOG_IDENTIFIER=ibu MESSAGE_ID={STEP_SUCCEEDED} STEP=ImportOstree"),
            )?;
            vm.power_off()?;
            note(&format!(
                "  power cut {} ImportOstree finished",
                if finished.is_empty() {
                    "before"
                } else {
                    "after"
                }
            ));
            Ok(())
        },
    )?;

    step("power on: ibu resumes at boot and completes Prep", || {
        let boot = vm.power_on()?;
        ensure!(boot.version == "1.0.0", "{boot:?}");
        let status = node::wait_for_condition(&vm, "PrepCompleted", PREP)?;
        let history = status["status"]["history"].to_string();
        note(&format!("  history: {}", truncate(&history, 400)));
        Ok(())
    })?;
    prepared_checks(&vm, &seed)
}

/// A target on the old OS, named `hostname`, that reaches the registry and names the seed in its desired state
/// (stage Idle), as Ignition would deliver it to a site's node.
pub(crate) fn target(h: &Harness, seed: &Seed, hostname: &str) -> Result<std::rc::Rc<Vm>> {
    let doc = upgrade_doc("Idle", &seed.image, &seed.version);
    let vm = h.provision(
        "target",
        vec![
            registry_config(h)?,
            files_config(&[
                ("/etc/ibu/upgrade.yaml", 0o644, &doc),
                ("/etc/hostname", 0o644, &format!("{hostname}\n")),
            ]),
        ],
    )?;
    step("the target runs the old OS and ibu is Idle", || {
        let boot = vm.boots().first().cloned().context("no boot recorded")?;
        ensure!(boot.version == "1.0.0", "{boot:?}");
        let run = wait_for_run(&vm, "ibu.service", None, ABORT)?;
        ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
        let status = ibu_status(&vm)?;
        ensure!(
            condition(&status, "Idle").as_deref() == Some("True"),
            "{status:#}"
        );
        Ok(())
    })?;
    Ok(vm)
}

/// `stage: Prep` by editing one field, then wait for PrepCompleted: how every Upgrade
/// scenario prepares its target.
pub(crate) fn converge_prep(vm: &Vm) -> Result<()> {
    step("stage: Prep; ibu converges to PrepCompleted", || {
        set_stage(vm, "Prep")?;
        node::wait_for_condition(vm, "PrepCompleted", PREP)?;
        Ok(())
    })
}

/// What a prepared node shows.
pub(crate) fn prepared_checks(vm: &Vm, seed: &Seed) -> Result<()> {
    step(
        "the new stateroot is deployed, not default; the old one is booted and default",
        || {
            let list = deployments(vm)?;
            for d in &list {
                note(&format!(
                    "  {} {} {}",
                    if d.booted { "*" } else { " " },
                    d.stateroot,
                    &d.checksum[..12]
                ));
            }
            ensure!(list.len() == 2, "{list:?}");
            ensure!(
                list[0].booted,
                "the default deployment is not the booted one: {list:?}"
            );
            ensure!(list[1].stateroot != list[0].stateroot, "{list:?}");
            let version = vm.ssh(&format!(
                ". /ostree/deploy/{}/deploy/{}.0/usr/lib/os-release && echo $IMAGE_VERSION",
                list[1].stateroot, list[1].checksum
            ))?;
            ensure!(
                version.trim() == seed.version,
                "new deployment has {version}"
            );
            Ok(())
        },
    )?;

    step("the seed's images are precached", || {
        let missing = missing_images(vm, &seed.workloads)?;
        ensure!(missing.is_empty(), "not in container storage: {missing:?}");
        Ok(())
    })?;

    step("the running system keeps working", || {
        let state = vm.ssh("systemctl is-system-running || true")?;
        let failed = vm.ssh("systemctl --failed --no-legend --plain || true")?;
        note(&format!(
            "  system {}; failed units: {}",
            state.trim(),
            failed.trim()
        ));
        ensure!(
            matches!(state.trim(), "running" | "degraded"),
            "system is {}",
            state.trim()
        );
        ensure!(failed.trim().is_empty(), "failed units:\n{failed}");
        let m = findmnt(vm, "/var/lib/containers")?;
        ensure!(m.fstype == "xfs", "{m:?}");
        let version = vm.ssh(". /usr/lib/os-release && echo $IMAGE_VERSION")?;
        ensure!(version.trim() == "1.0.0", "running {version}");
        Ok(())
    })
}
