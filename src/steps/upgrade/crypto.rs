//! `RegenerateCrypto`: no private key of the seed survives in the new stateroot.
//!
//! The new deployment's `/etc` is its commit's defaults plus the seed's `/etc` changes, then the
//! node's identity (`CarryIdentity` runs first). Private keys in it that did not come from this
//! node came from the seed or its OS image and are shared by every node upgraded from it. The
//! material ibu regenerates:
//!
//! | material | how |
//! |---|---|
//! | SSH host keys `/etc/ssh/ssh_host_<type>_key` (+ `.pub`, `-cert.pub`) of a type this node had none of | `ssh-keygen -t <type>` (DSA keys are removed: OpenSSH no longer makes them) |
//! | Debian's `ssl-cert-snakeoil` key and certificate, when the node had none | `openssl req -x509`, self-signed for the node's host name (CN and DNS SAN) |
//!
//! Keys the node had (carried) are its own and stay. Any other PEM private key in the new
//! `/etc` that differs from the node's file at the same path is listed in a warning: ibu cannot
//! know what it is for, so it says so rather than pretend.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{NewRoot, remove_if_exists, run};
use crate::plan::Outcome;
use crate::steps::Env;

const SNAKEOIL_KEY: &str = "ssl/private/ssl-cert-snakeoil.key";
const SNAKEOIL_CERT: &str = "ssl/certs/ssl-cert-snakeoil.pem";

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The node's host name as the new stateroot will have it.
fn hostname(new: &NewRoot) -> String {
    std::fs::read_to_string(new.etc.join("hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .map(|h| h.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// Keep `path`'s owner and mode after it was replaced.
struct Keep {
    uid: u32,
    gid: u32,
    mode: u32,
}

fn keep(p: &Path) -> Option<Keep> {
    std::fs::metadata(p).ok().map(|m| Keep {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
    })
}

fn restore(p: &Path, k: &Option<Keep>) -> Result<()> {
    if let Some(k) = k {
        std::os::unix::fs::chown(p, Some(k.uid), Some(k.gid))
            .with_context(|| format!("chown {}", p.display()))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(k.mode))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

pub fn regenerate(env: &Env<'_>, new: &NewRoot) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    let old_etc = &env.paths.etc;
    let host = hostname(new);
    let mut made = Vec::new();

    let ssh = new.etc.join("ssh");
    let mut keys: Vec<String> = match std::fs::read_dir(&ssh) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
            .collect(),
        Err(_) => vec![],
    };
    keys.sort();
    for name in keys {
        let path = ssh.join(&name);
        if old_etc.join("ssh").join(&name).exists() {
            continue; // carried: the node's own
        }
        let kind = name
            .trim_start_matches("ssh_host_")
            .trim_end_matches("_key")
            .to_string();
        for p in [
            path.clone(),
            ssh.join(format!("{name}.pub")),
            ssh.join(format!("{name}-cert.pub")),
        ] {
            remove_if_exists(&p)?;
        }
        if kind == "dsa" {
            made.push(format!("removed {name}"));
            continue;
        }
        run(Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", &kind, "-C"])
            .arg(format!("root@{host}"))
            .arg("-f")
            .arg(&path))
        .with_context(|| format!("regenerating SSH host key {name}"))?;
        made.push(name);
    }

    let key = new.etc.join(SNAKEOIL_KEY);
    let cert = new.etc.join(SNAKEOIL_CERT);
    if key.exists() && !old_etc.join(SNAKEOIL_KEY).exists() {
        let (k_keep, c_keep) = (keep(&key), keep(&cert));
        let tmp = new.etc.join("ssl/private/.ibu-snakeoil");
        crate::fsutil::create_dir_all(&tmp, 0o700)?;
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
            ])
            .arg(format!("/CN={host}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{host}"))
            .arg("-keyout")
            .arg(tmp.join("key"))
            .arg("-out")
            .arg(tmp.join("cert")))
        .context("regenerating the ssl-cert-snakeoil certificate (is openssl installed?)")?;
        std::fs::rename(tmp.join("key"), &key)
            .with_context(|| format!("replacing {}", key.display()))?;
        if let Some(dir) = cert.parent() {
            crate::fsutil::create_dir_all(dir, 0o755)?;
        }
        remove_if_exists(&cert)?;
        std::fs::rename(tmp.join("cert"), &cert)
            .with_context(|| format!("replacing {}", cert.display()))?;
        remove_if_exists(&tmp)?;
        restore(&key, &k_keep)?;
        restore(&cert, &c_keep)?;
        made.push("ssl-cert-snakeoil".into());
    }

    let mut left = Vec::new();
    scan_private_keys(&new.etc, &new.etc, old_etc, &mut left)?;
    let summary = if made.is_empty() {
        "no key from the seed to replace".to_string()
    } else {
        format!("regenerated: {}", made.join(", "))
    };
    if left.is_empty() {
        Ok(Outcome::Succeeded { message: summary })
    } else {
        Ok(Outcome::Warning {
            message: format!(
                "{summary}; private keys from the seed ibu does not know how to regenerate: {}",
                left.join(", ")
            ),
        })
    }
}

/// PEM private keys below `dir` that are neither handled above nor the node's own.
fn scan_private_keys(root: &Path, dir: &Path, old_etc: &Path, out: &mut Vec<String>) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        if md.is_dir() {
            scan_private_keys(root, &p, old_etc, out)?;
            continue;
        }
        if !md.is_file() || md.len() > 1 << 20 {
            continue;
        }
        let handled = rel.starts_with("ssh") || rel == Path::new(SNAKEOIL_KEY);
        if handled || same_file(&p, &old_etc.join(&rel)) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(17).any(|w| w == b"PRIVATE KEY-----")
        {
            out.push(format!("/etc/{}", rel.display()));
        }
    }
    Ok(())
}
