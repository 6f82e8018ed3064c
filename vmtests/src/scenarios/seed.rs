//! Scenario 2, the seed: a "seed" VM running the new OS (1.1.0), with the workload images
//! pulled from the run's registry, makes a seed with `ibu seed create` and pushes it to the
//! host's registry with the pull secret's credentials. The seed is what the Prep scenarios
//! upgrade their targets to; it is made once per run, by whichever scenario needs it first.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;

use crate::harness::{Harness, Os, Seed};
use crate::report::{note, step};
use crate::scenarios::node::{GUEST_AUTHFILE, deployments, node_keys, registry_config};

const SEED_VERSION: &str = "1.1.0";

/// The scenario: make the seed (again, if an earlier scenario of this run made one) and
/// check it from the host.
pub fn run(h: &Harness) -> Result<()> {
    let seed = make(h)?;
    *h.shared.seed.borrow_mut() = Some(seed);
    Ok(())
}

/// The run's seed, made now if no scenario has made it yet.
pub fn ensure(h: &Harness) -> Result<Seed> {
    if let Some(seed) = h.shared.seed.borrow().as_ref() {
        note(&format!("seed: {} (made earlier in this run)", seed.image));
        return Ok(seed.clone());
    }
    let seed = make(h)?;
    *h.shared.seed.borrow_mut() = Some(seed.clone());
    Ok(seed)
}

fn make(h: &Harness) -> Result<Seed> {
    let registry = h.shared.registry()?;
    let workloads = h.shared.workloads()?;
    let vm = h.provision_os("seed", Os::New, vec![registry_config(h)?])?;
    let image = format!("{}/seeds/ibu-vm:{SEED_VERSION}", registry.guest_address());

    let commit = step("the seed VM runs the new OS (1.1.0)", || {
        let boot = vm.boots().first().cloned().context("no boot recorded")?;
        ensure!(boot.version == SEED_VERSION, "booted {boot:?}");
        let booted = deployments(&vm)?
            .into_iter()
            .find(|d| d.booted)
            .context("no booted deployment")?;
        Ok(booted.checksum)
    })?;

    step(
        "the seed VM pulls its workload images from the registry",
        || {
            for w in &workloads {
                vm.ssh(&format!("podman pull -q --authfile {GUEST_AUTHFILE} {w}"))?;
            }
            note(&format!(
                "  {}",
                vm.ssh("podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}'")?
                    .trim()
                    .replace('\n', ", ")
            ));
            Ok(())
        },
    )?;

    let keys = step(
        "the seed VM's own key material (SSH host keys, TLS certificate)",
        || {
            let keys = node_keys(&vm)?;
            note(&format!("  {keys:?}"));
            ensure!(
                keys.tls.is_some(),
                "the new OS has no ssl-cert-snakeoil: {keys:?}"
            );
            Ok(keys)
        },
    )?;

    step(
        &format!("ibu seed create pushes {image} with the pull secret's credentials"),
        || {
            let started = Instant::now();
            let out = vm.ssh_output(
                &format!("ibu seed create --image {image} --authfile {GUEST_AUTHFILE} 2>&1"),
                Duration::from_secs(1800),
            )?;
            let tail: Vec<&str> = out.stdout.lines().rev().take(12).collect();
            for line in tail.iter().rev() {
                note(&format!("  | {line}"));
            }
            ensure!(
                out.code == 0,
                "ibu seed create exited {}:\n{}",
                out.code,
                out.stdout
            );
            note(&format!(
                "  seed create took {:.0}s in the VM",
                started.elapsed().as_secs_f64()
            ));
            let status = vm.ssh("ibu seed status")?;
            for line in status.lines() {
                note(&format!("  | {line}"));
            }
            Ok(())
        },
    )?;

    step(
        "the registry has the seed: LCA's labels, the new commit, the images",
        || {
            let host_ref = format!("{}/seeds/ibu-vm:{SEED_VERSION}", registry.host_address());
            let out = std::process::Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", "--authfile"])
                .arg(registry.host_authfile())
                .arg(format!("docker://{host_ref}"))
                .output()
                .context("running skopeo inspect")?;
            ensure!(
                out.status.success(),
                "skopeo inspect {host_ref}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let inspect: Json = serde_json::from_slice(&out.stdout)?;
            let labels = &inspect["Labels"];
            ensure!(
                labels["com.openshift.lifecycle-agent.seed_format_version"].is_string(),
                "no seed format label: {labels:#}"
            );
            let info: Json = serde_json::from_str(
                labels["com.openshift.lifecycle-agent.seed_cluster_info"]
                    .as_str()
                    .context("no seed info label")?,
            )?;
            ensure!(info["version"] == SEED_VERSION, "{info:#}");
            ensure!(info["ostree_commit"] == commit.as_str(), "{info:#}");
            ensure!(
                info["images"].as_u64() == Some(workloads.len() as u64),
                "the seed lists {} images, the seed VM had {}: {info:#}",
                info["images"],
                workloads.len()
            );
            note(&format!(
                "  {} layers, {} images, commit {}",
                inspect["Layers"].as_array().map_or(0, Vec::len),
                info["images"],
                &commit[..12]
            ));
            Ok(())
        },
    )?;

    // Free the CPUs for the targets.
    vm.power_off()?;
    Ok(Seed {
        image,
        version: SEED_VERSION.to_string(),
        workloads,
        keys,
    })
}
