//! Issue 6, scenarios 2 and 3, on one target (each cycle starts from Idle on the old OS):
//!
//! 1. Manual rollback: Prep, Upgrade (ibu reboots into the new stateroot, UpgradeCompleted),
//!    then `stage: Rollback`: ibu makes the old deployment the default and reboots into it,
//!    RollbackCompleted; `stage: Idle` finalizes the rollback (the new stateroot is removed).
//!    On the way the upgraded node's key material is checked to be its own (scenario 6).
//! 2. Automatic rollback after a failing post-pivot step: an extra manifest nobody can apply
//!    on a node fails its wave in the new stateroot; ibu rolls back by itself with "Rollback
//!    due to postpivot failure: ...", and Idle finalizes.
//! 3. Automatic rollback by the init monitor: a required health check fails in the new
//!    stateroot only, so the upgrade never completes; `initMonitorTimeoutSeconds` after the boot
//!    ibu rolls back with "Rollback due to LCA Init Monitor timeout, after <dur>".

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value as Json;

use crate::guest::{find_condition, ibu_status, wait_for_run, write_file};
use crate::harness::{Harness, Seed};
use crate::report::{note, step, truncate};
use crate::scenarios::node::{self, deployments, ostree_state, set_stage, upgrade_doc_with};
use crate::scenarios::prep::{converge_prep, target};
use crate::scenarios::seed;
use crate::vm::Vm;

const SETTLE: Duration = Duration::from_secs(600);
const UPGRADE: Duration = Duration::from_secs(1800);
/// Short enough to wait for, long enough for a TCG boot to reach ibu (~60 s).
const INIT_MONITOR_SECS: u64 = 180;

/// The extra manifests' ConfigMap: a Namespace, which no `apply.d` hook applies on a node.
const UNAPPLIABLE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site-manifests\n  namespace: openshift-lifecycle-agent\ndata:\n  ns.yaml: |\n    apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: edge-app\n";
const EXTRA_MANIFESTS: &str =
    "  extraManifests:\n  - name: site-manifests\n    namespace: openshift-lifecycle-agent\n";
/// A health check that fails after the pivot only: the new OS does not work for this site.
const UNHEALTHY_AFTER_PIVOT: &str = "#!/bin/sh\n# vmtests: the site's app does not come up on the new OS.\nif [ \"$IBU_HEALTH_PHASE\" = post-pivot ]; then\n  echo 'edge-app is not ready' >&2\n  exit 1\nfi\n";
const HEALTH_CHECK: &str = "/etc/ibu/health-check/required.d/50-edge-app";

pub fn run(h: &Harness) -> Result<()> {
    let seed = seed::ensure(h)?;
    let vm = target(h, &seed, "edge-2")?;
    let old = h.images.stateroot();
    let before = ostree_state(&vm)?;

    // 1. Manual rollback.
    converge_prep(&vm)?;
    let new = step(
        "stage: Upgrade; ibu reboots into the new stateroot and completes",
        || {
            let boot = vm.expect_reboot(|vm| set_stage(vm, "Upgrade"))?;
            ensure!(
                boot.version == seed.version && boot.stateroot() != old,
                "{boot:?}"
            );
            node::wait_for_condition(&vm, "UpgradeCompleted", UPGRADE)?;
            Ok(boot)
        },
    )?;
    node::check_own_keys(h, &vm, &seed)?;
    step(
        "stage: Rollback; ibu makes the old deployment the default and reboots into it",
        || {
            let boot = vm.expect_reboot(|vm| set_stage(vm, "Rollback"))?;
            ensure!(node::is_old_os(&boot, old), "{boot:?}");
            let status = node::wait_for_condition(&vm, "RollbackCompleted", SETTLE)?;
            note(&format!("  {}", message(&status, "RollbackCompleted")));
            let list = deployments(&vm)?;
            ensure!(
                list.len() == 2 && list[0].booted && list[1].stateroot == new.stateroot(),
                "{list:?}"
            );
            Ok(())
        },
    )?;
    finalize(&vm, old, &before, "the rollback")?;

    // 2. A failing post-pivot step.
    step(
        "the site adds an extra manifest no node can apply (a Namespace)",
        || {
            write_file(
                &vm,
                "/etc/ibu/configmaps/openshift-lifecycle-agent/site-manifests.yaml",
                UNAPPLIABLE,
            )?;
            set_doc(&vm, &seed, EXTRA_MANIFESTS)
        },
    )?;
    converge_prep(&vm)?;
    let status = auto_rollback(&vm, old, &seed)?;
    let msg = message(&status, "UpgradeInProgress");
    ensure!(
        msg.starts_with("Rollback due to postpivot failure: ") && msg.contains("edge-app"),
        "{status:#}"
    );
    finalize(&vm, old, &before, "the failed upgrade")?;

    // 3. The init monitor.
    step(
        &format!(
            "the manifest removed; a required health check that fails on the new OS; \
             initMonitorTimeoutSeconds: {INIT_MONITOR_SECS}"
        ),
        || {
            vm.ssh(
                "rm /etc/ibu/configmaps/openshift-lifecycle-agent/site-manifests.yaml && \
                 mkdir -p /etc/ibu/health-check/required.d",
            )?;
            write_file(&vm, HEALTH_CHECK, UNHEALTHY_AFTER_PIVOT)?;
            vm.ssh(&format!("chmod 755 {HEALTH_CHECK}"))?;
            set_doc(
                &vm,
                &seed,
                &format!(
                    "  autoRollbackOnFailure:\n    initMonitorTimeoutSeconds: {INIT_MONITOR_SECS}\n"
                ),
            )
        },
    )?;
    converge_prep(&vm)?;
    let status = auto_rollback(&vm, old, &seed)?;
    let msg = message(&status, "UpgradeInProgress");
    ensure!(
        msg == "Rollback due to LCA Init Monitor timeout, after 3m0s",
        "{status:#}"
    );
    finalize(&vm, old, &before, "the failed upgrade")?;
    Ok(())
}

/// Replace the desired state (stage Idle) with `extra_spec` added, as the site's tooling would.
fn set_doc(vm: &Vm, seed: &Seed, extra_spec: &str) -> Result<()> {
    let doc = upgrade_doc_with("Idle", &seed.image, &seed.version, extra_spec);
    write_file(vm, "/etc/ibu/upgrade.yaml", &doc)
}

/// `stage: Upgrade`: ibu reboots into the new stateroot, something there makes it roll back by
/// itself, and the node ends up in the old stateroot with Upgrade failed and the reason.
fn auto_rollback(vm: &Vm, old: &str, seed: &Seed) -> Result<Json> {
    step(
        "stage: Upgrade; ibu pivots, then rolls back by itself to the old stateroot",
        || {
            let started = Instant::now();
            let first = vm.expect_reboot(|vm| set_stage(vm, "Upgrade"))?;
            let back = if first.stateroot() == old {
                // The rollback was quicker than the new stateroot's boot marker.
                first
            } else {
                ensure!(first.version == seed.version, "{first:?}");
                vm.expect_reboot(|_| Ok(()))?
            };
            ensure!(node::is_old_os(&back, old), "{back:?}");
            note(&format!(
                "  back in the old stateroot {:.0}s after the edit",
                started.elapsed().as_secs_f64()
            ));
            let run = wait_for_run(vm, "ibu.service", None, SETTLE)?;
            note(&format!("  ibu at boot: {run:?}"));
            let status = ibu_status(vm)?;
            ensure!(
                find_condition(&status, "UpgradeInProgress")
                    .is_some_and(|c| c["status"] == "False" && c["reason"] == "Failed"),
                "Upgrade is not failed: {status:#}"
            );
            ensure!(
                status["status"]["validNextStages"] == serde_json::json!(["Idle"]),
                "next stages: {}",
                status["status"]["validNextStages"]
            );
            note(&format!(
                "  UpgradeInProgress: {}",
                truncate(&message(&status, "UpgradeInProgress"), 300)
            ));
            let list = deployments(vm)?;
            ensure!(list[0].booted && list[0].stateroot == old, "{list:?}");
            Ok(status)
        },
    )
}

/// `stage: Idle` after a rollback: the new stateroot is removed; the node is as before Prep.
fn finalize(vm: &Vm, old: &str, before: &str, what: &str) -> Result<()> {
    step(
        &format!("stage: Idle finalizes {what}: the node is as before Prep"),
        || {
            set_stage(vm, "Idle")?;
            node::wait_for_condition(vm, "Idle", SETTLE)?;
            let stateroots = vm.ssh("ls /ostree/deploy")?;
            ensure!(stateroots.trim() == old, "stateroots: {stateroots}");
            let after = boot_n(&ostree_state(vm)?);
            let before = boot_n(before);
            ensure!(
                after == before,
                "the node differs from before Prep:\n--- before\n{before}\n--- after\n{after}"
            );
            Ok(())
        },
    )
}

/// The state with ostree's boot version and sub-boot version left out: `/ostree/boot.0` or `.1`
/// (flipped by each bootloader write) and the deployment refs `ostree/<boot>/<subboot>/<index>`
/// that ostree regenerates with them at each cleanup. Which sub-boot version a write picks
/// depends on what earlier writes left of the inactive boot version (ibu reorders without
/// ostree's post-clean), not on anything a user sees.
fn boot_n(state: &str) -> String {
    let state = state
        .replace("/ostree/boot.0/", "/ostree/boot.N/")
        .replace("/ostree/boot.1/", "/ostree/boot.N/");
    let mut out: Vec<String> = state
        .lines()
        .map(|line| {
            match line
                .strip_prefix("ostree/")
                .map(|r| r.split('/').collect::<Vec<_>>())
            {
                Some(parts)
                    if parts.len() == 3 && parts[..2].iter().all(|p| *p == "0" || *p == "1") =>
                {
                    format!("ostree/B/S/{}", parts[2])
                }
                _ => line.to_string(),
            }
        })
        .collect();
    if state.ends_with('\n') {
        out.push(String::new());
    }
    out.join("\n")
}

fn message(status: &Json, kind: &str) -> String {
    find_condition(status, kind)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn boot_n_ignores_boot_and_subboot_versions_only() {
        let a = "* debian abc.0\n-- refs\nibu-vm/old\nostree/1/1/0\n-- boot entries\n\
                 options ostree=/ostree/boot.1/debian/b6/0\n";
        let b = "* debian abc.0\n-- refs\nibu-vm/old\nostree/1/0/0\n-- boot entries\n\
                 options ostree=/ostree/boot.0/debian/b6/0\n";
        assert_eq!(super::boot_n(a), super::boot_n(b));
        // A second deployment's ref, a different stateroot or another ref still differs.
        let two = b.replace("ostree/1/0/0\n", "ostree/1/0/0\nostree/1/0/1\n");
        assert_ne!(super::boot_n(a), super::boot_n(&two));
        assert_ne!(
            super::boot_n(a),
            super::boot_n(&b.replace("ibu-vm/old", "ibu/debian_1.1.0"))
        );
        assert_ne!(
            super::boot_n(a),
            super::boot_n(&b.replace("debian/b6", "x/b6"))
        );
    }
}
