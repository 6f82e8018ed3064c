//! Issue 6, scenario 1, the full upgrade: a target on 1.0.0 goes Idle → Prep → Upgrade, ibu
//! reboots it into the new stateroot by itself (the trial boot on extlinux), completes the
//! post-pivot steps there (UpgradeCompleted), and `stage: Idle` finalizes: the old stateroot is
//! gone and the node boots 1.1.0. The node keeps its hostname, machine-id, SSH host keys and a
//! workload's data (a podman volume on the shared partition).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;

use crate::guest::message_id::STEP_STARTED;
use crate::guest::{condition, find_condition, ibu_status, wait_for_run};
use crate::harness::Harness;
use crate::report::{note, step, truncate};
use crate::scenarios::node::{self, deployments, set_stage};
use crate::scenarios::prep::{converge_prep, prepared_checks, target};
use crate::scenarios::seed;
use crate::vm::Vm;

const UPGRADE: Duration = Duration::from_secs(1800);
const FINALIZE: Duration = Duration::from_secs(600);

/// The node's identity as the scenario compares it.
const IDENTITY: &str = "hostname; cat /etc/machine-id; cat /etc/ssh/ssh_host_*_key.pub | sort";

pub fn run(h: &Harness) -> Result<()> {
    let seed = seed::ensure(h)?;
    let vm = target(h, &seed, "edge-1")?;
    converge_prep(&vm)?;
    prepared_checks(&vm, &seed)?;

    let web = seed
        .workloads
        .iter()
        .find(|w| w.contains("/apps/web:"))
        .cloned()
        .unwrap_or_default();
    let (identity, data) = step("a workload writes its data; the node's identity", || {
        let data = vm.ssh(&format!(
            "podman volume create appdata >/dev/null && podman run --rm -v appdata:/data \
             --entrypoint /bin/busybox {web} sh -c 'echo written-on-1.0.0-$RANDOM > /data/state && cat /data/state'"
        ))?;
        let identity = vm.ssh(IDENTITY)?;
        note(&format!("  workload data: {}", data.trim()));
        for line in identity.lines() {
            note(&format!("  | {}", truncate(line, 100)));
        }
        Ok((identity, data))
    })?;

    let pivot_started = Instant::now();
    let boot = step(
        "stage: Upgrade; ibu runs the pre-pivot steps and reboots into the new stateroot",
        || {
            let boot = vm.expect_reboot(|vm| set_stage(vm, "Upgrade"))?;
            ensure!(
                boot.version == seed.version && boot.stateroot() != h.images.stateroot(),
                "booted {boot:?}"
            );
            let cmdline = vm.ssh("cat /proc/cmdline")?;
            note(&format!("  /proc/cmdline: {}", cmdline.trim()));
            Ok(boot)
        },
    )?;

    let completed = step(
        "ibu completes the upgrade after the pivot: UpgradeCompleted",
        || {
            let status = node::wait_for_condition(&vm, "UpgradeCompleted", UPGRADE)?;
            note(&format!(
                "  {:.0}s from the edit to UpgradeCompleted",
                pivot_started.elapsed().as_secs_f64()
            ));
            let history = status["status"]["history"].to_string();
            note(&format!("  history: {}", truncate(&history, 600)));
            let list = deployments(&vm)?;
            ensure!(
                list[0].booted && list[0].stateroot == boot.stateroot(),
                "the new deployment is not the booted default: {list:?}"
            );
            // Completion removes the init monitor: nothing may roll this upgrade back now.
            let monitor = vm.ssh(
                "ls /etc/systemd/system | grep -c ibu-init-monitor; \
                 systemctl is-active ibu-init-monitor.timer || true",
            )?;
            ensure!(
                monitor.split_whitespace().collect::<Vec<_>>() == ["0", "inactive"],
                "the init monitor is still there after UpgradeCompleted: {monitor}"
            );
            Ok(status)
        },
    )?;

    node::check_own_keys(h, &vm, &seed)?;

    let (downtime, up) = step(
        "downtime of the upgrade: ibu's reboot request to UpgradeCompleted (guest clock)",
        || {
            let requested = reboot_requested(&vm, h.images.stateroot())?;
            let done = completed_at(&completed)?;
            let marker = marker_at(&vm)?;
            note(&format!(
                "  reboot requested -> system up {:.1}s -> UpgradeCompleted {:.1}s",
                marker - requested,
                done - requested
            ));
            timeline(&vm, requested)?;
            Ok((done - requested, marker - requested))
        },
    )?;

    step(
        "the node kept its hostname, machine-id, SSH host keys and the workload's data",
        || {
            let now = vm.ssh(IDENTITY)?;
            ensure!(
                now == identity,
                "identity changed:\n--- before\n{identity}\n--- after\n{now}"
            );
            let after = vm.ssh(&format!(
                "podman run --rm -v appdata:/data --entrypoint /bin/busybox {web} cat /data/state"
            ))?;
            ensure!(after == data, "workload data {after:?}, was {data:?}");
            Ok(())
        },
    )?;

    step("stage: Idle finalizes: the old stateroot is gone", || {
        set_stage(&vm, "Idle")?;
        node::wait_for_condition(&vm, "Idle", FINALIZE)?;
        let stateroots = vm.ssh("ls /ostree/deploy")?;
        ensure!(
            stateroots.trim() == boot.stateroot(),
            "stateroots after finalize: {stateroots}"
        );
        ensure!(
            deployments(&vm)?.len() == 1,
            "{}",
            vm.ssh("ostree admin status")?
        );
        // Everything ibu made for the old stateroot goes (LCA §6): its refs (the kept
        // stateroot's own ref stays), the workspace with the backups and the staged manifests;
        // ibu's status stays. The precached images stay too.
        let refs = vm.ssh("ostree refs --repo=/ostree/repo")?;
        let own = format!("ibu/{}", boot.stateroot());
        ensure!(
            refs.lines()
                .all(|r| !r.starts_with("ibu/") || r.trim() == own),
            "ibu's refs left after finalize (only {own} may stay):\n{refs}"
        );
        let ibu_dir = vm.ssh("ls -A /var/lib/ibu")?;
        ensure!(
            ibu_dir.split_whitespace().collect::<Vec<_>>() == ["state.yaml"],
            "/var/lib/ibu after finalize: {ibu_dir}"
        );
        let missing = node::missing_images(&vm, &seed.workloads)?;
        ensure!(
            missing.is_empty(),
            "precached images gone after finalize: {missing:?}"
        );
        Ok(())
    })?;

    let plain = step(
        "a plain reboot: the node boots 1.1.0 from the new stateroot, ibu Idle",
        || {
            let requested = RefCell::new(0.0);
            let again = vm.expect_reboot(|vm| {
                let out =
                    vm.ssh_output("date +%s.%N; systemctl reboot", Duration::from_secs(30))?;
                if let Some(t) = out
                    .stdout
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                {
                    *requested.borrow_mut() = t;
                }
                Ok(())
            })?;
            ensure!(
                again.version == seed.version && again.stateroot() == boot.stateroot(),
                "{again:?}"
            );
            let plain = marker_at(&vm)? - *requested.borrow();
            let run = wait_for_run(&vm, "ibu.service", None, FINALIZE)?;
            ensure!(run.result == "success" && run.exit_status == 0, "{run:?}");
            let status = ibu_status(&vm)?;
            ensure!(
                condition(&status, "Idle").as_deref() == Some("True"),
                "{status:#}"
            );
            note(&format!(
                "  plain reboot: requested -> system up {plain:.1}s"
            ));
            Ok(plain)
        },
    )?;

    let ratio = downtime / plain;
    note(&format!(
        "downtime: upgrade {downtime:.1}s (system up after {up:.1}s), plain reboot {plain:.1}s: {ratio:.2}x"
    ));
    crate::results::write_section(
        &h.repo,
        "upgrade-downtime",
        &format!(
            "## upgrade-downtime\n\n\
             The upgrade's downtime in a VM: from ibu's reboot request (its `Reboot` step, in the \
             old stateroot's journal) to UpgradeCompleted (the condition's time), against a plain \
             reboot of the same VM afterwards (`systemctl reboot` to `ibu-vm-booted.service`, \
             multi-user up). Guest clock for both; QEMU/TCG, 2 vCPUs.\n\n\
             Command: `sudo cargo run -p ibu-vmtests --release -- run upgrade`\n\n\
             Machine: 2 CPUs (AMD EPYC), measured {}\n\n\
             | span | seconds |\n|---|---|\n\
             | upgrade: reboot request to system up in the new stateroot | {up:.1} |\n\
             | upgrade: reboot request to UpgradeCompleted | {downtime:.1} |\n\
             | plain reboot: request to system up | {plain:.1} |\n\n\
             **ratio upgrade downtime / plain reboot: {ratio:.2}×** (target ≤ 1.3×)\n",
            today()
        ),
    )?;
    Ok(())
}

/// When ibu asked for the pivot reboot: its `Reboot` step in the old stateroot's journal (seen
/// from the new stateroot through /sysroot), in seconds since the epoch.
fn reboot_requested(vm: &Vm, old_stateroot: &str) -> Result<f64> {
    let out = vm.ssh(&format!(
        "journalctl --no-pager -o json \
         --directory=/sysroot/ostree/deploy/{old_stateroot}/var/log/journal/$(cat /etc/machine-id) \
         MESSAGE_ID={STEP_STARTED} STEP=Reboot"
    ))?;
    let last = out
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .context("no Reboot step in the old stateroot's journal")?;
    let entry: Json = serde_json::from_str(last)?;
    let micros: f64 = entry["__REALTIME_TIMESTAMP"]
        .as_str()
        .context("no __REALTIME_TIMESTAMP")?
        .parse()?;
    Ok(micros / 1e6)
}

/// Notes where the downtime goes: ibu's runs, its retry timer, the end of systemd's startup,
/// systemd's reloads and the marker service in this boot, in seconds after the reboot request.
fn timeline(vm: &Vm, requested: f64) -> Result<()> {
    let out = vm.ssh(
        "{ journalctl -b --no-pager -o short-unix -u ibu.service -u ibu-retry.timer \
             -u ibu-vm-booted.service; \
           journalctl -b --no-pager -o short-unix MESSAGE_ID=b07a249cd024414a82dd00cd181378ff; \
           journalctl -b --no-pager -o short-unix _PID=1 | grep -E 'Reloading'; } \
         | sort -n",
    )?;
    note("  timeline of the new boot (seconds after the reboot request):");
    for line in out.lines() {
        let Some((t, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(t) = t.parse::<f64>() else { continue };
        note(&format!(
            "    {:7.1} {}",
            t - requested,
            truncate(rest, 160)
        ));
    }
    Ok(())
}

/// The time of the UpgradeCompleted condition, in seconds since the epoch.
fn completed_at(status: &Json) -> Result<f64> {
    let time = find_condition(status, "UpgradeCompleted")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .context("no UpgradeCompleted time")?;
    let out = std::process::Command::new("date")
        .args(["-d", time, "+%s"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// When this boot's marker service started (multi-user up), in seconds since the epoch.
fn marker_at(vm: &Vm) -> Result<f64> {
    let out = vm.ssh(
        "echo $(date +%s.%N) $(cut -d' ' -f1 /proc/uptime) \
         $(systemctl show ibu-vm-booted.service -p ExecMainStartTimestampMonotonic --value)",
    )?;
    let v: Vec<f64> = out
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("marker time from {out:?}"))?;
    ensure!(v.len() == 3 && v[2] > 0.0, "marker time from {out:?}");
    Ok(v[0] - v[1] + v[2] / 1e6)
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
