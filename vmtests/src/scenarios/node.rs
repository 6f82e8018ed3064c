//! What the seed and Prep scenarios share: the Ignition config that lets a node reach the
//! run's registry (as a site would deliver it: a `registries.conf.d` drop-in and the pull
//! secret as a Secret drop-in for ibu), the desired-state documents, and the facts about a
//! node's ostree state they compare before and after.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use serde_json::Value as Json;

use crate::guest::{condition, ibu_status};
use crate::harness::{Harness, Seed};
use crate::ignition::files_config;
use crate::report::{note, step, truncate};
use crate::vm::{Boot, Vm};

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
    upgrade_doc_with(stage, seed_image, version, "")
}

/// [`upgrade_doc`] with more `spec` fields (`extra_spec`: lines indented by two spaces).
pub fn upgrade_doc_with(stage: &str, seed_image: &str, version: &str, extra_spec: &str) -> String {
    format!(
        "# Delivered by vmtests; an admin changes only the stage.\n\
         apiVersion: lca.openshift.io/v1\n\
         kind: ImageBasedUpgrade\n\
         metadata:\n  name: upgrade\n\
         spec:\n  stage: {stage}\n  seedImageRef:\n    image: {seed_image}\n    version: {version}\n    pullSecretRef:\n      name: {PULL_SECRET}\n{extra_spec}"
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
/// failure ibu reports meanwhile (a condition with reason `Failed`, `Blocked`, ...). Failures
/// already in the status when the wait starts are the past (an automatic rollback's Upgrade
/// failed, before the `Idle` that cleans up), unless ibu reports them again.
pub fn wait_for_condition(vm: &Vm, kind: &str, timeout: Duration) -> Result<Json> {
    let started = Instant::now();
    let mut last_message = String::new();
    let mut earlier: Option<Vec<String>> = None;
    loop {
        if let Ok(status) = ibu_status(vm) {
            if condition(&status, kind).as_deref() == Some("True") {
                return Ok(status);
            }
            let failed = failed_conditions(&status);
            let earlier = earlier.get_or_insert_with(|| failed.clone());
            if let Some(new) = failed.iter().find(|f| !earlier.contains(f)) {
                bail!("ibu reports a failure while waiting for {kind}: {new}\n{status:#}");
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

/// The conditions that say ibu failed or is stuck until someone acts (type, message and
/// time), but LCA's "Rollback requested" (Upgrade "failed" because the admin asked to go back).
fn failed_conditions(status: &Json) -> Vec<String> {
    const STUCK: &[&str] = &[
        "Failed",
        "AbortFailed",
        "FinalizeFailed",
        "InvalidTransition",
        "Blocked",
    ];
    status["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["reason"].as_str().is_some_and(|r| STUCK.contains(&r)))
        .filter(|c| c["message"] != "Rollback requested")
        .map(|c| {
            format!(
                "{}: {} ({})",
                c["type"], c["message"], c["lastTransitionTime"]
            )
        })
        .collect()
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

/// Did `boot` start the old OS (1.0.0) from the target's original stateroot `old`?
pub fn is_old_os(boot: &Boot, old: &str) -> bool {
    boot.version == "1.0.0" && boot.stateroot() == old
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

/// A node's key material, as the "no two nodes share a key" checks compare it: the SSH host
/// keys' fingerprints and the TLS certificate Debian's `ssl-cert` makes (its fingerprint and
/// the names in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKeys {
    pub hostname: String,
    /// `SHA256:… (ED25519)`, one per host key.
    pub ssh: Vec<String>,
    /// `ssl-cert-snakeoil.pem`'s SHA-256 fingerprint, when the node has one.
    pub tls: Option<String>,
    /// Its subject and subject alternative names.
    pub tls_names: String,
}

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// Must-show 6 of the upgrade: after an upgrade the node's key material is its own, neither
/// the seed's nor that of a node upgraded earlier in the run (recorded here for later ones).
pub fn check_own_keys(h: &Harness, vm: &Vm, seed: &Seed) -> Result<()> {
    step(
        "the node's SSH host keys and TLS certificate are its own: not the seed's, not another upgraded node's",
        || {
            let keys = node_keys(vm)?;
            let others = h.shared.upgraded.borrow().clone();
            note(&format!(
                "  {} SSH host keys, TLS {} ({}); compared with the seed and {} node(s) upgraded before",
                keys.ssh.len(),
                keys.tls.as_deref().map_or("none", |t| truncate(t, 23)),
                keys.tls_names,
                others.len()
            ));
            let problems = shared_key_problems(&keys, &seed.keys, &others);
            ensure!(problems.is_empty(), "{}", problems.join("\n"));
            h.shared.upgraded.borrow_mut().push(keys);
            Ok(())
        },
    )
}

/// Read a node's [`NodeKeys`].
pub fn node_keys(vm: &Vm) -> Result<NodeKeys> {
    let out = vm.ssh(&format!(
        "hostname; for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done; echo --; \
         if [ -e {SNAKEOIL} ]; then openssl x509 -in {SNAKEOIL} -noout -fingerprint -sha256 \
         -subject -ext subjectAltName; fi"
    ))?;
    parse_node_keys(&out).with_context(|| format!("key material from:\n{out}"))
}

fn parse_node_keys(out: &str) -> Result<NodeKeys> {
    let mut lines = out.lines();
    let hostname = lines.next().context("no hostname")?.trim().to_string();
    let mut ssh = Vec::new();
    for line in lines.by_ref() {
        if line == "--" {
            break;
        }
        // `256 SHA256:… root@host (ED25519)`
        let words: Vec<&str> = line.split_whitespace().collect();
        if let (Some(fp), Some(kind)) = (words.get(1), words.last()) {
            ssh.push(format!("{fp} {kind}"));
        }
    }
    ssh.sort();
    let rest: Vec<&str> = lines.collect();
    let tls = rest.iter().find_map(|l| {
        l.split_once("Fingerprint=")
            .map(|(_, f)| f.trim().to_string())
    });
    let tls_names = rest
        .iter()
        .filter(|l| !l.contains("Fingerprint="))
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    ensure!(!ssh.is_empty(), "no SSH host key");
    Ok(NodeKeys {
        hostname,
        ssh,
        tls,
        tls_names,
    })
}

/// Why `node`'s keys are not its own: shared with the seed or with another upgraded node, or a
/// certificate that does not name it. Empty when they are its own.
pub fn shared_key_problems(node: &NodeKeys, seed: &NodeKeys, others: &[NodeKeys]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut compare = |what: &str, other: &NodeKeys| {
        for k in node.ssh.iter().filter(|k| other.ssh.contains(k)) {
            problems.push(format!("SSH host key {k} is also {what}'s"));
        }
        if node.tls.is_some() && node.tls == other.tls {
            problems.push(format!("the TLS certificate is also {what}'s"));
        }
    };
    compare("the seed", seed);
    for other in others {
        compare(&format!("node {}", other.hostname), other);
    }
    match &node.tls {
        None if seed.tls.is_some() => {
            problems.push("no TLS certificate, the seed had one".to_string())
        }
        Some(_) if !node.tls_names.contains(&format!("CN = {}", node.hostname)) => {
            problems.push(format!(
                "the TLS certificate does not name {}: {}",
                node.hostname, node.tls_names
            ))
        }
        _ => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "seed\n256 SHA256:aaa root@seed (ED25519)\n3072 SHA256:bbb root@seed (RSA)\n--\nsha256 Fingerprint=AA:01\nsubject=CN = seed\nX509v3 Subject Alternative Name: \n    DNS:seed\n";

    fn node(host: &str, ed: &str, rsa: &str, tls: &str) -> NodeKeys {
        parse_node_keys(&format!(
            "{host}\n256 SHA256:{ed} root@x (ED25519)\n3072 SHA256:{rsa} root@x (RSA)\n--\nsha256 Fingerprint={tls}\nsubject=CN = {host}\nX509v3 Subject Alternative Name: \n    DNS:{host}\n"
        ))
        .unwrap()
    }

    #[test]
    fn failures_but_a_requested_rollback_count() {
        let status = serde_json::json!({"status": {"conditions": [
            {"type": "UpgradeInProgress", "status": "False", "reason": "Failed",
             "message": "Rollback requested", "lastTransitionTime": "t1"},
            {"type": "PrepCompleted", "status": "True", "reason": "Completed",
             "message": "Prep stage completed successfully", "lastTransitionTime": "t0"},
            {"type": "UpgradeCompleted", "status": "False", "reason": "Failed",
             "message": "Uncontrolled rollback", "lastTransitionTime": "t2"},
        ]}});
        assert_eq!(
            failed_conditions(&status),
            ["\"UpgradeCompleted\": \"Uncontrolled rollback\" (\"t2\")"]
        );
    }

    #[test]
    fn parses_ssh_keygen_and_openssl_output() {
        let k = parse_node_keys(SEED).unwrap();
        assert_eq!(k.hostname, "seed");
        assert_eq!(k.ssh, ["SHA256:aaa (ED25519)", "SHA256:bbb (RSA)"]);
        assert_eq!(k.tls.as_deref(), Some("AA:01"));
        assert!(k.tls_names.contains("CN = seed") && k.tls_names.contains("DNS:seed"));
        let no_tls = parse_node_keys("n\n256 SHA256:x root@n (ED25519)\n--\n").unwrap();
        assert_eq!(no_tls.tls, None);
        assert!(parse_node_keys("n\n--\n").is_err());
    }

    #[test]
    fn shared_keys_are_found() {
        let seed = parse_node_keys(SEED).unwrap();
        let a = node("edge-1", "e1", "r1", "AA:11");
        let cases: &[(NodeKeys, &[&str])] = &[
            (node("edge-2", "e2", "r2", "AA:22"), &[]),
            (node("edge-2", "aaa", "r2", "AA:22"), &["also the seed's"]),
            (node("edge-2", "e2", "r1", "AA:22"), &["also node edge-1's"]),
            (
                node("edge-2", "e2", "r2", "AA:01"),
                &["certificate is also the seed's"],
            ),
            (
                node("edge-2", "e2", "r2", "AA:11"),
                &["certificate is also node edge-1's"],
            ),
        ];
        for (n, want) in cases {
            let got = shared_key_problems(n, &seed, std::slice::from_ref(&a));
            assert_eq!(got.len(), want.len(), "{n:?}: {got:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(g.contains(w), "{g} / {w}");
            }
        }
        let mut wrong_name = node("edge-2", "e2", "r2", "AA:22");
        wrong_name.tls_names = "subject=CN = seed".into();
        assert_eq!(shared_key_problems(&wrong_name, &seed, &[]).len(), 1);
        let mut none = node("edge-2", "e2", "r2", "AA:22");
        none.tls = None;
        assert_eq!(shared_key_problems(&none, &seed, &[]).len(), 1);
    }
}
