//! `StageManifests` (before the pivot) and `ApplyManifests` (after it, one wave per step).
//! What a manifest is and what applying one means on a node: [`crate::manifests`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{NewRoot, inside, remove_if_exists, run, workspace_in};
use crate::manifests::{self, Manifest};
use crate::paths::Paths;
use crate::plan::{Outcome, StepData};
use crate::steps::Env;

/// Staged manifests: `<workspace>/manifests/<wave>/<n>-<kind>-<name>.yaml`.
pub fn staging_dir(var: &Path) -> PathBuf {
    workspace_in(var).join("manifests")
}

fn file_name(i: usize, m: &Manifest) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{:03}-{}-{}.yaml", i, clean(&m.kind), clean(&m.name))
}

pub fn stage(env: &Env<'_>, new: &NewRoot, version: &str) -> Result<Outcome> {
    crate::sysroot::ensure_writable(env.paths)?;
    let dir = env.paths.config_dir();
    let mut cms = Vec::new();
    for r in &env.desired.extra_manifests {
        cms.push(crate::spec::refs::config_map(&dir, r).map_err(anyhow::Error::new)?);
    }
    let (ms, skipped) = manifests::collect(&cms, version)?;
    let total = ms.len();
    let waves = manifests::by_wave(ms);
    let root = staging_dir(&new.var);
    // Staged anew each time: a rerun after a crash leaves no stale file behind.
    remove_if_exists(&root)?;
    for (wave, list) in &waves {
        let d = root.join(wave);
        crate::fsutil::create_dir_all(&d, 0o700)?;
        for (i, m) in list.iter().enumerate() {
            crate::fsutil::write_atomic(&d.join(file_name(i, m)), m.text.as_bytes(), 0o600)
                .with_context(|| format!("staging {}", m.source))?;
        }
    }
    let labels: Vec<String> = waves.iter().map(|(w, _)| w.clone()).collect();
    Ok(Outcome::Produced {
        message: format!(
            "staged {total} manifests in {} waves ({}){}",
            labels.len(),
            labels.join(", "),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; not for version {version}: {}", skipped.join(", "))
            }
        ),
        data: StepData::Waves(labels),
    })
}

/// Where an absolute node path lives: `/etc` and `/var` of the booted system, `/usr/local` in
/// `/var/usrlocal`.
fn node_path(paths: &Paths, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    let rel = |prefix: &str| path.strip_prefix(prefix).ok().map(Path::to_path_buf);
    if let Some(r) = rel("/etc") {
        return inside(&paths.etc, &r);
    }
    if let Some(r) = rel("/usr/local") {
        return inside(&paths.var, &Path::new("usrlocal").join(r));
    }
    if let Some(r) = rel("/var") {
        return inside(&paths.var, &r);
    }
    bail!(
        "{p}: only files under /etc, /var and /usr/local can be written on an ostree node (/usr is read-only)"
    )
}

fn apply_machine_config(paths: &Paths, m: &Path) -> Result<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
    let (files, units) = manifests::machine_config(&text)?;
    for f in &files {
        let dst = node_path(paths, &f.path)?;
        if let Some(dir) = dst.parent() {
            crate::fsutil::create_dir_all(dir, 0o755)?;
        }
        crate::fsutil::write_atomic(&dst, &f.contents, f.mode)
            .with_context(|| format!("writing {}", f.path))?;
    }
    let unit_dir = inside(&paths.etc, Path::new("systemd/system"))?;
    let mut started = Vec::new();
    for u in &units {
        crate::fsutil::create_dir_all(&unit_dir, 0o755)?;
        let file = unit_dir.join(&u.name);
        if u.mask {
            remove_if_exists(&file)?;
            std::os::unix::fs::symlink("/dev/null", &file)
                .with_context(|| format!("masking {}", u.name))?;
            continue;
        }
        if let Some(c) = &u.contents {
            crate::fsutil::write_atomic(&file, c.as_bytes(), 0o644)
                .with_context(|| format!("writing unit {}", u.name))?;
        }
        let Some(enabled) = u.enabled else { continue };
        let body = std::fs::read_to_string(&file).unwrap_or_default();
        for (target, kind) in manifests::install_links(&body) {
            let d = unit_dir.join(format!("{target}.{kind}"));
            let link = d.join(&u.name);
            remove_if_exists(&link)?;
            if enabled {
                crate::fsutil::create_dir_all(&d, 0o755)?;
                std::os::unix::fs::symlink(format!("../{}", u.name), &link)
                    .with_context(|| format!("enabling {} for {target}", u.name))?;
            }
        }
        if enabled {
            started.push(u.name.clone());
        }
    }
    Ok((files.len() + units.len(), started))
}

fn hook(paths: &Paths, kind: &str) -> Option<PathBuf> {
    let p = paths.config_dir().join("apply.d").join(kind);
    std::fs::metadata(&p)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .then_some(p)
}

pub fn apply(env: &Env<'_>, wave: &str) -> Result<Outcome> {
    let paths = env.paths;
    let dir = staging_dir(&paths.var).join(wave);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    let mut to_start = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        let kind = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        if kind == "MachineConfig" {
            let (n, started) = apply_machine_config(paths, f)
                .with_context(|| format!("applying MachineConfig {name}"))?;
            to_start.extend(started);
            applied.push(format!("MachineConfig {name} ({n} files and units)"));
        } else if let Some(h) = hook(paths, &kind) {
            run(Command::new(&h).arg(f).env("IBU_MANIFEST_KIND", &kind))
                .with_context(|| format!("applying {kind} {name} with {}", h.display()))?;
            applied.push(format!("{kind} {name}"));
        } else {
            bail!(
                "no way to apply {kind} {name} on a node: ibu applies MachineConfigs itself; \
                 for other kinds add an executable hook {}",
                paths.config_dir().join("apply.d").join(&kind).display()
            );
        }
    }
    if !paths.is_sandbox() && !to_start.is_empty() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        run(Command::new("systemctl")
            .args(["start", "--no-block"])
            .args(&to_start))?;
    }
    Ok(Outcome::Succeeded {
        message: format!("wave {wave}: applied {}", applied.join(", ")),
    })
}
