//! What the seed and Prep scenarios share: the Ignition config that lets a node reach the
//! run's registry (as a site would deliver it: a `registries.conf.d` drop-in and the pull
//! secret as a Secret drop-in for ibu), the desired-state documents, and the facts about a
//! node's ostree state they compare before and after.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use serde_json::Value as Json;

use crate::guest::{condition, ibu_status};
use crate::harness::Harness;
use crate::ignition::files_config;
use crate::report::note;
use crate::vm::Vm;

/// The pull secret's name in `pullSecretRef` and where ibu finds it.
pub const PULL_SECRET: &str = "seed-pull-secret";
const PULL_SECRET_PATH: &str = "/etc/ibu/secrets/openshift-lifecycle-agent/seed-pull-secret.yaml";
/// The same credentials as a containers-auth.json, for podman and `ibu seed create` in guests.
pub const GUEST_AUTHFILE: &str = "/etc/ibu/vmtests-auth.json";

/// Ignition config: the registry is insecure (plain HTTP), and its credentials (0600).
pub fn registry_config(h: &Harness) -> Result<Json> {
    let registry = h.shared.registry()?;
    let address = registry.guest_address();
    let authfile = registry.authfile(&address);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {PULL_SECRET}\n  namespace: openshift-lifecycle-agent\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        base64::engine::general_purpose::STANDARD.encode(&authfile)
    );
    let conf = format!(
        "# The run's test registry (vmtests): plain HTTP on the host's loopback.\n[[registry]]\nlocation = \"{address}\"\ninsecure = true\n"
    );
    Ok(files_config(&[
        (
            "/etc/containers/registries.conf.d/50-ibu-vmtests.conf",
            0o644,
            &conf,
        ),
        (PULL_SECRET_PATH, 0o600, &secret),
        (GUEST_AUTHFILE, 0o600, &authfile),
    ]))
}

/// The desired state of a target: the seed named, stage `stage`.
pub fn upgrade_doc(stage: &str, seed_image: &str, version: &str) -> String {
    format!(
        "# Delivered by vmtests; an admin changes only the stage.\n\
         apiVersion: lca.openshift.io/v1\n\
         kind: ImageBasedUpgrade\n\
         metadata:\n  name: upgrade\n\
         spec:\n  stage: {stage}\n  seedImageRef:\n    image: {seed_image}\n    version: {version}\n    pullSecretRef:\n      name: {PULL_SECRET}\n"
    )
}

/// Edit the desired state's stage the way an admin would (one field, in place).
pub fn set_stage(vm: &Vm, stage: &str) -> Result<()> {
    vm.ssh(&format!(
        "sed -i 's/^  stage: .*/  stage: {stage}/' /etc/ibu/upgrade.yaml && grep -q '^  stage: {stage}$' /etc/ibu/upgrade.yaml"
    ))?;
    Ok(())
}

/// Wait until condition `kind` is True in ibu's status, reporting progress; fails early on a
/// failed condition (`PrepCompleted` False with reason `Failed`).
pub fn wait_for_condition(vm: &Vm, kind: &str, timeout: Duration) -> Result<Json> {
    let started = Instant::now();
    let mut last_message = String::new();
    loop {
        if let Ok(status) = ibu_status(vm) {
            if condition(&status, kind).as_deref() == Some("True") {
                return Ok(status);
            }
            if let Some(failed) = failed_condition(&status) {
                bail!("ibu reports a failure while waiting for {kind}: {failed}\n{status:#}");
            }
            let message = progress_line(&status);
            if message != last_message {
                note(&format!(
                    "  [{:>4.0}s] {message}",
                    started.elapsed().as_secs_f64()
                ));
                last_message = message;
            }
            if started.elapsed() > timeout {
                bail!(
                    "VM {}: {kind} not True after {:.0}s:\n{status:#}",
                    vm.name,
                    timeout.as_secs_f64()
                );
            }
        } else if started.elapsed() > timeout {
            bail!(
                "VM {}: no ibu status after {:.0}s",
                vm.name,
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// A condition that says ibu failed or is stuck until someone acts.
fn failed_condition(status: &Json) -> Option<String> {
    const STUCK: &[&str] = &[
        "Failed",
        "AbortFailed",
        "FinalizeFailed",
        "InvalidTransition",
        "Blocked",
    ];
    status["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["reason"].as_str().is_some_and(|r| STUCK.contains(&r)))
        .map(|c| format!("{}: {}", c["type"], c["message"]))
}

/// The in-progress conditions' messages (what ibu is doing).
fn progress_line(status: &Json) -> String {
    status["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["reason"] == "InProgress")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["type"].as_str().unwrap_or("?"),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

/// A node's ostree state as an admin sees it: deployments (default first, with the booted
/// mark), stateroots, refs and the boot entries.
pub fn ostree_state(vm: &Vm) -> Result<String> {
    vm.ssh(
        "ostree admin status | grep -v '^ *Version:' ; echo '-- stateroots'; ls /ostree/deploy; \
         echo '-- refs'; ostree refs --repo=/ostree/repo | sort; echo '-- boot entries'; \
         grep -h '^options\\|^version' /boot/loader/entries/*.conf",
    )
    .context("reading the node's ostree state")
}

/// One deployment in `ostree admin status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub stateroot: String,
    pub checksum: String,
    pub booted: bool,
}

/// `ostree admin status`'s deployments, default first.
pub fn deployments(vm: &Vm) -> Result<Vec<Deployment>> {
    let out = vm.ssh("ostree admin status")?;
    let mut list = Vec::new();
    for line in out.lines() {
        let booted = line.starts_with("* ");
        let rest = line.trim_start_matches("* ").trim_start();
        if line.starts_with("    ") || rest.is_empty() {
            continue;
        }
        let mut words = rest.split_whitespace();
        if let (Some(stateroot), Some(id)) = (words.next(), words.next())
            && let Some((checksum, _serial)) = id.rsplit_once('.')
            && checksum.len() == 64
        {
            list.push(Deployment {
                stateroot: stateroot.to_string(),
                checksum: checksum.to_string(),
                booted,
            });
        }
    }
    ensure!(!list.is_empty(), "no deployment in:\n{out}");
    Ok(list)
}

/// The images among `refs` that are not in the node's container storage.
pub fn missing_images(vm: &Vm, refs: &[String]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for r in refs {
        let out = vm.ssh_output(&format!("podman image exists {r}"), Duration::from_secs(60))?;
        if out.code != 0 {
            missing.push(r.clone());
        }
    }
    Ok(missing)
}
