//! Issue 6, scenarios 4 and 5: an upgrade that goes wrong below ibu.
//!
//! - `unbootable`: the new deployment's initramfs is broken (zeros) before `stage: Upgrade`.
//!   Nothing of ibu can run in that stateroot: the kernel panics. The trial boot (see
//!   `src/bootloader.rs`: syslinux's boot-once entry with `panic=10`) makes the next boot the
//!   old stateroot's, without a human; there ibu reports Upgrade failed "Uncontrolled
//!   rollback", and `Idle` removes the new stateroot.
//! - `upgrade-power-cut`: hard power-offs at the Upgrade stage's boundaries, each cut the
//!   moment ibu's journal says a step succeeded (ibu starts the next step about a second later): after
//!   `CarryIdentity` (before the pivot), after `Pivot` (the boot entry is set, the reboot not
//!   asked for yet) and after `ApplyIdentity` in the new stateroot (during the post-pivot
//!   steps). Each power-on converges, with the status telling the truth on the way, to
//!   UpgradeCompleted with the node's identity kept.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::guest::message_id::{STEP_STARTED, STEP_SUCCEEDED};
use crate::guest::{condition, find_condition, ibu_status, wait_for_run};
use crate::harness::Harness;
use crate::report::{note, step};
use crate::scenarios::node::{self, deployments, set_stage};
use crate::scenarios::prep::{converge_prep, target};
use crate::scenarios::seed;
use crate::vm::Vm;

const SETTLE: Duration = Duration::from_secs(600);
const UPGRADE: Duration = Duration::from_secs(1800);

/// Scenario 4.
pub fn run_unbootable(h: &Harness) -> Result<()> {
    let seed = seed::ensure(h)?;
    let vm = target(h, &seed, "edge-3")?;
    let old = h.images.stateroot();
    converge_prep(&vm)?;

    step(
        "the new deployment's initramfs is broken (overwritten with zeros in /boot)",
        || {
            let list = deployments(&vm)?;
            ensure!(list.len() == 2, "{list:?}");
            // `ostree=/ostree/boot.N/<stateroot>/<bootcsum>/<serial>` names the stateroot.
            let initrd = |stateroot: &str| -> Result<String> {
                let out = vm.ssh(&format!(
                    "grep -l 'ostree=/ostree/boot\\.[01]/{stateroot}/' /boot/loader/entries/*.conf | \
                     xargs grep -h '^initrd' | awk '{{print $2}}'"
                ))?;
                let path = out.trim().to_string();
                ensure!(
                    path.starts_with("/ostree/") && !path.contains('\n'),
                    "initrd of {stateroot}: {out:?}"
                );
                Ok(path)
            };
            let new = initrd(&list[1].stateroot)?;
            let current = initrd(&list[0].stateroot)?;
            ensure!(new != current, "the deployments share {new}");
            vm.ssh(&format!(
                "mount -o remount,rw /boot 2>/dev/null; head -c 1M /dev/zero > /boot{new} && sync"
            ))?;
            note(&format!("  /boot{new} is now 1 MiB of zeros"));
            Ok(())
        },
    )?;

    step(
        "stage: Upgrade; the new stateroot panics; the node comes back to the old one by itself",
        || {
            let console_before = fs_err::metadata(vm.console_log()).map_or(0, |m| m.len());
            let boot = vm.expect_reboot_through_failure(|vm| set_stage(vm, "Upgrade"))?;
            ensure!(node::is_old_os(&boot, old), "booted {boot:?}");
            let console = fs_err::read(vm.console_log())?;
            let since = String::from_utf8_lossy(&console[console_before as usize..]);
            let panic = since
                .lines()
                .find(|l| l.contains("Kernel panic"))
                .context("no kernel panic on the console between the pivot and the old boot")?;
            note(&format!("  console: {}", panic.trim()));
            let run = wait_for_run(&vm, "ibu.service", None, SETTLE)?;
            ensure!(run.exit_status == 3, "ibu at boot: {run:?}");
            let status = ibu_status(&vm)?;
            let c = find_condition(&status, "UpgradeInProgress").context("no UpgradeInProgress")?;
            ensure!(
                c["status"] == "False"
                    && c["reason"] == "Failed"
                    && c["message"] == "Uncontrolled rollback",
                "{status:#}"
            );
            ensure!(
                status["status"]["validNextStages"] == serde_json::json!(["Idle"]),
                "{status:#}"
            );
            note("  UpgradeInProgress: False, Failed, \"Uncontrolled rollback\"; next stage Idle");
            Ok(())
        },
    )?;

    step("stage: Idle removes the new stateroot", || {
        set_stage(&vm, "Idle")?;
        node::wait_for_condition(&vm, "Idle", SETTLE)?;
        let stateroots = vm.ssh("ls /ostree/deploy")?;
        ensure!(stateroots.trim() == old, "stateroots: {stateroots}");
        Ok(())
    })
}

/// Scenario 5.
pub fn run_power_cut(h: &Harness) -> Result<()> {
    let seed = seed::ensure(h)?;
    let vm = target(h, &seed, "edge-4")?;
    let old = h.images.stateroot();
    converge_prep(&vm)?;
    let identity = vm.ssh("hostname; cat /etc/machine-id")?;

    step(
        "stage: Upgrade; power cut after CarryIdentity (before the pivot)",
        || {
            set_stage(&vm, "Upgrade")?;
            cut_after(&vm, "CarryIdentity")
        },
    )?;
    step(
        "power on: the old stateroot boots, Upgrade is in progress; power cut after Pivot",
        || {
            let boot = vm.power_on()?;
            ensure!(node::is_old_os(&boot, old), "{boot:?}");
            let status = ibu_status(&vm)?;
            ensure!(
                condition(&status, "UpgradeInProgress").as_deref() == Some("True"),
                "{status:#}"
            );
            cut_after(&vm, "Pivot")
        },
    )?;
    step(
        "power on: the trial boot starts the new stateroot; power cut after ApplyIdentity",
        || {
            let boot = vm.power_on()?;
            ensure!(
                boot.version == seed.version && boot.stateroot() != old,
                "{boot:?}"
            );
            cut_after(&vm, "ApplyIdentity")
        },
    )?;
    step(
        "power on: the new stateroot (now the default) boots; ibu completes the upgrade",
        || {
            let boot = vm.power_on()?;
            ensure!(
                boot.version == seed.version && boot.stateroot() != old,
                "{boot:?}"
            );
            let status = node::wait_for_condition(&vm, "UpgradeCompleted", UPGRADE)?;
            let history = status["status"]["history"].to_string();
            note(&format!(
                "  history: {}",
                crate::report::truncate(&history, 500)
            ));
            let now = vm.ssh("hostname; cat /etc/machine-id")?;
            ensure!(now == identity, "identity {now:?}, was {identity:?}");
            let list = deployments(&vm)?;
            ensure!(
                list.len() == 2 && list[0].booted && list[1].stateroot == old,
                "the old stateroot must stay until finalize: {list:?}"
            );
            Ok(())
        },
    )?;
    node::check_own_keys(h, &vm, &seed)
}

/// Wait in the guest until ibu's journal says `step_name` succeeded in this boot, then cut the
/// power at once (systemd restarts ibu 0.5 s after a step, and ibu needs most of a second to
/// plan the next one).
fn cut_after(vm: &Vm, step_name: &str) -> Result<()> {
    let journal = |id: &str, filter: &str| {
        format!("journalctl -b -q -o cat SYSLOG_IDENTIFIER=ibu MESSAGE_ID={id} {filter}")
    };
    let succeeded = journal(STEP_SUCCEEDED, &format!("STEP={step_name}"));
    let wait = format!(
        "for i in $(seq 1 20000); do {succeeded} | grep -q . && break; sleep 0.05; done; \
         {succeeded} | grep -q . && echo SUCCEEDED; {} | tail -n 1",
        journal(STEP_STARTED, "")
    );
    // Early in a boot sshd may not be up yet: a refused or dropped connection is asked
    // again (for a while: an sshd that never starts is a failure), anything else is the answer.
    let out = vm.wait_for(
        &format!("ibu's {step_name} step to succeed"),
        SETTLE,
        Duration::from_secs(1),
        || {
            let out = vm.ssh_output(&wait, UPGRADE)?;
            Ok((out.code != 255).then_some(out))
        },
    )?;
    vm.power_off()?;
    ensure!(
        out.stdout.lines().next() == Some("SUCCEEDED"),
        "{step_name} did not succeed (ssh exit {}): {}",
        out.code,
        out.stdout
    );
    note(&format!(
        "  power cut after {step_name}; the last step ibu had started: {}",
        out.stdout.lines().nth(1).unwrap_or("?")
    ));
    Ok(())
}
