//! ibu's Ignition configs (`ignition/` at the repository root): generating them from the
//! Butane sources, checking them with `ignition-validate`, and composing what a test VM boots
//! with (the shipped configs merged, unchanged, with the run's SSH key and ibu binary).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value as Json, json};

use crate::butane;

/// A Butane source in `ignition/` and what is generated from it.
pub struct Source {
    /// The Butane file, relative to `ignition/`.
    pub butane: &'static str,
    /// The Ignition JSON written beside it.
    pub ignition: &'static str,
    /// The MachineConfig (`ignition/machineconfig/<name>.yaml`) wrapping the same config.
    pub machineconfig: &'static str,
}

/// Every config ibu ships, in the order a node merges them.
pub const SOURCES: &[Source] = &[
    Source {
        butane: "container-storage.bu",
        ignition: "container-storage.ign",
        machineconfig: "98-var-lib-containers-partitioned",
    },
    Source {
        butane: "ibu.bu",
        ignition: "ibu.ign",
        machineconfig: "99-ibu",
    },
];

/// MachineConfigs carry Ignition 3.2.0, which every OpenShift 4.6+ machine-config operator
/// accepts; nothing in ibu's configs needs a later spec.
pub const MACHINECONFIG_IGNITION_VERSION: &str = "3.2.0";

/// A generated file: its path under the repository root and its contents.
pub struct Generated {
    pub path: PathBuf,
    pub contents: String,
}

/// Everything generated from the Butane sources of `repo` (the repository root).
pub fn generate(repo: &Path) -> Result<Vec<Generated>> {
    let dir = repo.join("ignition");
    let mut out = Vec::new();
    for s in SOURCES {
        let src_path = dir.join(s.butane);
        let src = fs_err::read_to_string(&src_path)?;
        let config = butane::translate(&format!("ignition/{}", s.butane), &src, repo)?;
        out.push(Generated {
            path: PathBuf::from("ignition").join(s.ignition),
            contents: format!("{}\n", serde_json::to_string_pretty(&config)?),
        });
        out.push(Generated {
            path: PathBuf::from("ignition/machineconfig").join(format!("{}.yaml", s.machineconfig)),
            contents: machineconfig(s, config)?,
        });
    }
    Ok(out)
}

/// The MachineConfig for OpenShift users: the same Ignition config, for the master pool (a
/// single-node cluster's only pool).
fn machineconfig(s: &Source, mut config: Json) -> Result<String> {
    config["ignition"]["version"] = MACHINECONFIG_IGNITION_VERSION.into();
    let mc = json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {
            "name": s.machineconfig,
            "labels": { "machineconfiguration.openshift.io/role": "master" },
        },
        "spec": { "config": config },
    });
    Ok(format!(
        "# Generated from ignition/{} by `cargo run -p ibu-vmtests -- ignition`; do not edit.\n{}",
        s.butane,
        serde_yaml::to_string(&mc)?
    ))
}

/// Write the generated files (`update`) or fail naming the stale ones.
pub fn write_or_check(repo: &Path, update: bool) -> Result<()> {
    let mut stale = Vec::new();
    for g in generate(repo)? {
        let path = repo.join(&g.path);
        let current = fs_err::read_to_string(&path).unwrap_or_default();
        if current == g.contents {
            continue;
        }
        if update {
            if let Some(parent) = path.parent() {
                fs_err::create_dir_all(parent)?;
            }
            fs_err::write(&path, &g.contents)?;
            eprintln!("wrote {}", g.path.display());
        } else {
            stale.push(g.path.display().to_string());
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated Ignition files are stale: {}; run `cargo run -p ibu-vmtests -- ignition`",
            stale.join(", ")
        );
    }
    Ok(())
}

/// Run `ignition-validate` on a config file; its warnings are errors too.
pub fn validate_file(path: &Path) -> Result<()> {
    let out = std::process::Command::new("ignition-validate")
        .arg(path)
        .output()
        .with_context(|| format!("running ignition-validate {}", path.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !text.trim().is_empty() {
        bail!(
            "ignition-validate {}: {}: {}",
            path.display(),
            out.status,
            text.trim()
        );
    }
    Ok(())
}

/// What a test VM needs from its harness on top of ibu's shipped configs.
pub struct RunConfig<'a> {
    /// The public SSH key of this harness run, for root.
    pub ssh_public_key: &'a str,
    /// Where the guest fetches the ibu binary under test (the harness serves it over HTTP:
    /// Ignition reads QEMU's fw_cfg far too slowly for a binary inline in the config).
    pub ibu_url: &'a str,
    /// The binary's SHA-512 (Ignition verifies what it fetched).
    pub ibu_sha512: &'a str,
    /// More configs to merge after ibu's (a scenario's own files, e.g. a desired state).
    pub extra: Vec<Json>,
}

/// The config a test VM boots with: Ignition merges, in order, ibu's shipped configs
/// (unchanged, from `ignition/`), the run's own (root's SSH key, the ibu binary under test
/// replacing the shipped placeholder source), then `extra`. Later configs win per file path.
/// The config stays small (a few KiB), as QEMU's fw_cfg needs.
pub fn vm_config(repo: &Path, run: &RunConfig) -> Result<Json> {
    let mut merge = Vec::new();
    for s in SOURCES {
        let path = repo.join("ignition").join(s.ignition);
        let bytes = fs_err::read(&path)?;
        merge.push(json!({ "source": butane::data_url(&bytes) }));
    }
    let run_config = json!({
        "ignition": { "version": butane::IGNITION_VERSION },
        "passwd": { "users": [ { "name": "root", "sshAuthorizedKeys": [ run.ssh_public_key.trim() ] } ] },
        "storage": { "files": [ {
            "path": "/usr/local/bin/ibu",
            "mode": 0o755,
            "overwrite": true,
            "contents": {
                "source": run.ibu_url,
                "verification": { "hash": format!("sha512-{}", run.ibu_sha512) },
            },
        } ] },
    });
    for config in std::iter::once(&run_config).chain(&run.extra) {
        let bytes = gzip(serde_json::to_vec(config)?.as_slice())?;
        merge.push(json!({ "source": butane::data_url(&bytes), "compression": "gzip" }));
    }
    Ok(json!({
        "ignition": { "version": butane::IGNITION_VERSION, "config": { "merge": merge } },
    }))
}

/// A scenario's own files as an Ignition config to merge (`path`, mode, contents).
pub fn files_config(files: &[(&str, u32, &str)]) -> Json {
    let files: Vec<Json> = files
        .iter()
        .map(|(path, mode, contents)| {
            json!({
                "path": path,
                "mode": mode,
                "overwrite": true,
                "contents": { "source": butane::data_url(contents.as_bytes()) },
            })
        })
        .collect();
    json!({ "ignition": { "version": butane::IGNITION_VERSION }, "storage": { "files": files } })
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}
