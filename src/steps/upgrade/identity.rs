//! The node's identity across the pivot: what is copied from the old stateroot into the new
//! one (`CarryIdentity`, before the pivot) and checked and applied after it (`ApplyIdentity`).
//!
//! The seed carries none of this (see `seed::collect::exclude`): it is what makes a node this
//! node. The table [`CARRIED`] is the whole list, each entry with its reason; a path missing on
//! the node is skipped (the new stateroot keeps what its seed has there). Entries marked
//! *verified* must still be byte-identical after the pivot, or `ApplyIdentity` fails (and the
//! upgrade rolls back): they are what an operator relies on to reach the node and tell it apart.
//! A record of what was carried, with checksums, is kept in the new stateroot's workspace
//! (`identity.yaml`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{NewRoot, copy_entry, inside, workspace_in};
use crate::plan::Outcome;
use crate::steps::Env;

/// Which tree a path is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tree {
    Etc,
    Var,
}

/// One rule: a pattern relative to `/etc` or `/var` (`*` matches within one component).
#[derive(Debug, Clone, Copy)]
pub struct Carry {
    pub tree: Tree,
    pub pattern: &'static str,
    pub verify: bool,
    pub reason: &'static str,
}

const fn etc(pattern: &'static str, verify: bool, reason: &'static str) -> Carry {
    Carry {
        tree: Tree::Etc,
        pattern,
        verify,
        reason,
    }
}

const fn var(pattern: &'static str, verify: bool, reason: &'static str) -> Carry {
    Carry {
        tree: Tree::Var,
        pattern,
        verify,
        reason,
    }
}

/// What is carried into the new stateroot.
pub const CARRIED: &[Carry] = &[
    etc("hostname", true, "the node's name"),
    etc(
        "machine-id",
        true,
        "the installation's identity (journal, D-Bus, DHCP client ID)",
    ),
    etc("machine-info", false, "pretty host name, chassis, location"),
    etc("hostid", false, "the host ID"),
    etc(
        "NetworkManager/system-connections",
        false,
        "NetworkManager connection profiles: node IPs, routes, VLANs, bonds",
    ),
    etc(
        "systemd/network",
        false,
        "systemd-networkd configuration: node IPs and links",
    ),
    etc("resolv.conf", false, "the resolver configuration"),
    etc(
        "ssh/ssh_host_*",
        true,
        "SSH host keys and certificates: clients know the node by them",
    ),
    etc(
        "ssl/private/ssl-cert-snakeoil.key",
        false,
        "Debian's per-host TLS key",
    ),
    etc(
        "ssl/certs/ssl-cert-snakeoil.pem",
        false,
        "Debian's per-host TLS certificate",
    ),
    etc(
        "environment",
        false,
        "system-wide environment: the proxy (HTTP_PROXY, NO_PROXY, ...)",
    ),
    etc(
        "systemd/system.conf.d",
        false,
        "DefaultEnvironment= drop-ins: the proxy for services",
    ),
    etc("containers/auth.json", false, "the registry pull secret"),
    etc(
        "pki/ca-trust/source/anchors",
        false,
        "CA certificates the node trusts (Red Hat layout)",
    ),
    etc("chrony.conf", false, "time sources (Red Hat layout)"),
    etc("chrony/chrony.conf", false, "time sources (Debian layout)"),
    etc("chrony/sources.d", false, "time sources"),
    etc("chrony/conf.d", false, "chrony configuration"),
    etc("chrony/chrony.keys", false, "NTP authentication keys"),
    etc(
        "ibu",
        false,
        "ibu's desired state, ConfigMaps, Secrets (pull secret) and health checks",
    ),
    etc("systemd/system/ibu*", false, "ibu's systemd units"),
    etc("systemd/system/*.wants/ibu*", false, "ibu's units enabled"),
    var(
        "usrlocal/bin/ibu",
        true,
        "ibu itself (/usr/local is /var/usrlocal on ostree)",
    ),
    var(
        "usrlocal/share/ca-certificates",
        false,
        "CA certificates the node trusts (Debian layout)",
    ),
    // `authorized_keys` and `authorized_keys.d/` (where Ignition writes keys, as on Fedora
    // CoreOS; the VM test found a node it could not log in to without it).
    var(
        "roothome/.ssh/authorized_keys*",
        true,
        "who may log in as root",
    ),
    var(
        "home/*/.ssh/authorized_keys*",
        true,
        "who may log in as each user",
    ),
];

/// One carried path, as recorded in `identity.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Carried {
    pub tree: Tree,
    pub path: PathBuf,
    /// sha256 of a regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub verify: bool,
}

/// File name of the record in the workspace.
pub const RECORD: &str = "identity.yaml";

/// Paths under `root` matching `pattern`, relative to `root`; symlinks are matched but never
/// followed into.
pub fn expand(root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let mut found = vec![PathBuf::new()];
    for comp in pattern.split('/') {
        let mut next = Vec::new();
        for base in &found {
            let dir = root.join(base);
            if !comp.contains('*') {
                let p = dir.join(comp);
                if std::fs::symlink_metadata(&p).is_ok() {
                    next.push(base.join(comp));
                }
                continue;
            }
            let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
            if !is_dir {
                continue;
            }
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| glob_match(comp, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| base.join(n)));
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect())
}

/// `*` matches any run of characters within a name.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn sha256_file(p: &Path) -> Result<Option<String>> {
    use sha2::{Digest, Sha256};
    let md = std::fs::symlink_metadata(p).with_context(|| format!("stat {}", p.display()))?;
    if !md.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let sum = Sha256::digest(&bytes);
    Ok(Some(sum.iter().map(|b| format!("{b:02x}")).collect()))
}

fn tree_root<'a>(tree: Tree, etc: &'a Path, var: &'a Path) -> &'a Path {
    match tree {
        Tree::Etc => etc,
        Tree::Var => var,
    }
}

/// Every regular file below `rel` (or `rel` itself), relative to `root`.
fn files_below(root: &Path, rel: &Path) -> Vec<PathBuf> {
    let p = root.join(rel);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(&p)
            .map(|rd| {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok())
                    .flat_map(|e| files_below(root, &rel.join(e.file_name())))
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default(),
        Ok(_) => vec![rel.to_path_buf()],
        Err(_) => vec![],
    }
}

/// `CarryIdentity`: copy every [`CARRIED`] path of the booted system into `new`.
pub fn carry(env: &Env<'_>, new: &NewRoot) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    let (old_etc, old_var) = (&env.paths.etc, &env.paths.var);
    let mut record = Vec::new();
    for rule in CARRIED {
        let src_root = tree_root(rule.tree, old_etc, old_var);
        let dst_root = tree_root(rule.tree, &new.etc, &new.var);
        for rel in expand(src_root, rule.pattern)? {
            let dst = inside(dst_root, &rel)
                .with_context(|| format!("carrying {} ({})", rel.display(), rule.reason))?;
            copy_entry(&src_root.join(&rel), &dst)
                .with_context(|| format!("carrying {} ({})", rel.display(), rule.reason))?;
            for f in files_below(src_root, &rel) {
                record.push(Carried {
                    tree: rule.tree,
                    sha256: sha256_file(&src_root.join(&f))?,
                    path: f,
                    verify: rule.verify,
                });
            }
        }
    }
    let ws = workspace_in(&new.var);
    crate::fsutil::create_dir_all(&ws, 0o700)?;
    let text = serde_yaml::to_string(&record).context("serializing the identity record")?;
    crate::fsutil::write_atomic(&ws.join(RECORD), text.as_bytes(), 0o600)?;
    Ok(Outcome::Succeeded {
        message: format!(
            "carried {} files of this node's identity into stateroot {}",
            record.len(),
            new.stateroot
        ),
    })
}

/// `ApplyIdentity`, after the pivot: the verified entries are in place unchanged, the kernel's
/// host name is the carried one, and the trusted CAs are rebuilt from the carried sources.
pub fn apply(env: &Env<'_>) -> Result<Outcome> {
    let p = env.paths.workspace().join(RECORD);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let record: Vec<Carried> =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    let mut problems = Vec::new();
    for c in record.iter().filter(|c| c.verify) {
        let root = tree_root(c.tree, &env.paths.etc, &env.paths.var);
        let now = sha256_file(&root.join(&c.path)).ok().flatten();
        if now != c.sha256 {
            problems.push(format!(
                "/{}/{} is not what was carried",
                match c.tree {
                    Tree::Etc => "etc",
                    Tree::Var => "var",
                },
                c.path.display()
            ));
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("identity check failed: {}", problems.join("; "));
    }
    let mut applied = Vec::new();
    if !env.paths.is_sandbox() {
        if let Ok(want) = std::fs::read_to_string(env.paths.etc.join("hostname")) {
            let want = want.trim();
            let have = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !want.is_empty() && want != have {
                nix::unistd::sethostname(want)
                    .with_context(|| format!("setting the host name to {want}"))?;
                applied.push(format!("host name {want}"));
            }
        }
        let carried_cas = record.iter().any(|c| {
            c.path.starts_with("usrlocal/share/ca-certificates")
                || c.path.starts_with("pki/ca-trust/source/anchors")
        });
        if carried_cas {
            for tool in ["update-ca-certificates", "update-ca-trust"] {
                if which(tool).is_some() {
                    super::run(&mut std::process::Command::new(tool))?;
                    applied.push(tool.to_string());
                    break;
                }
            }
        }
    }
    Ok(Outcome::Succeeded {
        message: format!(
            "{} carried files in place{}",
            record.len(),
            if applied.is_empty() {
                String::new()
            } else {
                format!("; applied: {}", applied.join(", "))
            }
        ),
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("ssh_host_*", "ssh_host_ed25519_key"));
        assert!(glob_match("ibu*", "ibu.service"));
        assert!(glob_match("*.wants", "multi-user.target.wants"));
        assert!(!glob_match("ibu*", "xibu"));
        assert!(glob_match("a*b*c", "aXXbYc"));
        assert!(!glob_match("a*b*c", "aXXcYb"));
    }

    #[test]
    fn expand_patterns() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in [
            "systemd/system/ibu.service",
            "systemd/system/multi-user.target.wants/ibu.service",
            "systemd/system/paths.target.wants/ibu.path",
            "systemd/system/paths.target.wants/other.path",
            "ssh/ssh_host_rsa_key",
        ] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), "x").unwrap();
        }
        assert_eq!(
            expand(r, "systemd/system/*.wants/ibu*").unwrap(),
            vec![
                PathBuf::from("systemd/system/multi-user.target.wants/ibu.service"),
                PathBuf::from("systemd/system/paths.target.wants/ibu.path")
            ]
        );
        assert_eq!(expand(r, "hostname").unwrap(), Vec::<PathBuf>::new());
        assert_eq!(expand(r, "ssh/ssh_host_*").unwrap().len(), 1);
        assert_eq!(
            CARRIED.iter().filter(|c| c.reason.is_empty()).count(),
            0,
            "every rule says why"
        );
    }
}
