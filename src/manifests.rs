//! Extra manifests (`spec.extraManifests`) on a node without a cluster: which apply, in which
//! wave, and what applying a `MachineConfig` means.
//!
//! Each referenced ConfigMap holds manifests, one YAML document per data key (several separated
//! by `---` are accepted too), as LCA's do. Before the pivot ibu keeps those for the target
//! version and groups them by wave; after the pivot it applies the waves in order:
//!
//! - **Version filter** (`lca.openshift.io/target-ocp-version`): a ConfigMap or a manifest with
//!   this label applies only if the label is the target version (`X.Y.Z`) or its `X.Y`; without
//!   the label it always applies.
//! - **Waves** (`lca.openshift.io/apply-wave` annotation): ascending integers; manifests without
//!   the annotation form the last wave, `unset`.
//! - **Applying.** A node has no API server, so ibu applies what maps onto the node itself:
//!   `MachineConfig` (`machineconfiguration.openshift.io/v1`) — its `spec.config.storage.files`
//!   are written (only under `/etc`, `/var` and `/usr/local`, which is `/var/usrlocal` on
//!   ostree: `/usr` is read-only) and its `spec.config.systemd.units` written to
//!   `/etc/systemd/system`, enabled (their `[Install]` section's `WantedBy=`/`RequiredBy=` links),
//!   disabled or masked. Any other kind is handed to an executable hook
//!   `/etc/ibu/apply.d/<Kind>`, called with the manifest's path; without a hook the wave fails
//!   ("no way to apply"), which rolls back unless disabled — a manifest is never dropped silently.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Deserialize;
use serde_yaml::Value;

use crate::spec::refs::ConfigMap;

pub const TARGET_VERSION_LABEL: &str = "lca.openshift.io/target-ocp-version";
pub const APPLY_WAVE_ANNOTATION: &str = "lca.openshift.io/apply-wave";
/// The wave of manifests without an `apply-wave` annotation: applied last.
pub const UNSET_WAVE: &str = "unset";

/// One manifest to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `<namespace>/<configmap>/<key>` (`#<n>` for the n-th document of a key).
    pub source: String,
    pub kind: String,
    pub name: String,
    pub wave: Option<i64>,
    pub text: String,
}

/// Does a `target-ocp-version` label select `version`? `X.Y.Z` must be equal; `X.Y` matches
/// every `X.Y.*`.
pub fn version_matches(label: &str, version: &str) -> bool {
    let label = label.trim();
    if label == version {
        return true;
    }
    let mm = |v: &str| -> Option<String> {
        let mut it = v.split('.');
        Some(format!("{}.{}", it.next()?, it.next()?))
    };
    label.split('.').count() == 2 && mm(version).as_deref() == Some(label)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str()
}

/// The manifests of `cms` for `version`, and what the version filter left out.
pub fn collect(cms: &[ConfigMap], version: &str) -> Result<(Vec<Manifest>, Vec<String>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for cm in cms {
        let cm_name = format!("{}/{}", cm.namespace, cm.name);
        if let Some(l) = cm.labels.get(TARGET_VERSION_LABEL)
            && !version_matches(l, version)
        {
            skipped.push(format!("ConfigMap {cm_name} ({TARGET_VERSION_LABEL}={l})"));
            continue;
        }
        for (key, text) in &cm.data {
            let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
                .map(Value::deserialize)
                .collect::<Result<_, _>>()
                .with_context(|| format!("ConfigMap {cm_name} key {key}: not YAML"))?;
            let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
            let many = docs.len() > 1;
            for (i, doc) in docs.into_iter().enumerate() {
                let source = if many {
                    format!("{cm_name}/{key}#{}", i + 1)
                } else {
                    format!("{cm_name}/{key}")
                };
                let kind = str_at(&doc, &["kind"])
                    .with_context(|| format!("{source}: a manifest needs a kind"))?
                    .to_string();
                let name = str_at(&doc, &["metadata", "name"])
                    .with_context(|| format!("{source}: a manifest needs metadata.name"))?
                    .to_string();
                if let Some(l) = str_at(&doc, &["metadata", "labels", TARGET_VERSION_LABEL])
                    && !version_matches(l, version)
                {
                    skipped.push(format!("{kind} {name} ({TARGET_VERSION_LABEL}={l})"));
                    continue;
                }
                let wave = match doc
                    .get("metadata")
                    .and_then(|m| m.get("annotations"))
                    .and_then(|a| a.get(APPLY_WAVE_ANNOTATION))
                {
                    None => None,
                    Some(v) => {
                        let s = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => bail!("{source}: {APPLY_WAVE_ANNOTATION} must be an integer"),
                        };
                        Some(s.trim().parse::<i64>().with_context(|| {
                            format!("{source}: {APPLY_WAVE_ANNOTATION} {s:?} is not an integer")
                        })?)
                    }
                };
                let text = serde_yaml::to_string(&doc)
                    .with_context(|| format!("{source}: re-serializing"))?;
                out.push(Manifest {
                    source,
                    kind,
                    name,
                    wave,
                    text,
                });
            }
        }
    }
    Ok((out, skipped))
}

/// The wave label of an `apply-wave` value.
pub fn wave_label(wave: Option<i64>) -> String {
    wave.map_or_else(|| UNSET_WAVE.to_string(), |w| w.to_string())
}

/// Manifests grouped by wave, waves in apply order (ascending, `unset` last), manifests in
/// their ConfigMap order within a wave.
pub fn by_wave(ms: Vec<Manifest>) -> Vec<(String, Vec<Manifest>)> {
    let mut groups: BTreeMap<(bool, i64), Vec<Manifest>> = BTreeMap::new();
    for m in ms {
        let key = (m.wave.is_none(), m.wave.unwrap_or(0));
        groups.entry(key).or_default().push(m);
    }
    groups
        .into_iter()
        .map(|((unset, w), v)| (wave_label((!unset).then_some(w)), v))
        .collect()
}

/// A file of a MachineConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// A systemd unit of a MachineConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUnit {
    pub name: String,
    pub contents: Option<String>,
    pub enabled: Option<bool>,
    pub mask: bool,
}

/// The files and units of a `MachineConfig` manifest.
pub fn machine_config(text: &str) -> Result<(Vec<NodeFile>, Vec<NodeUnit>)> {
    let doc: Value = serde_yaml::from_str(text).context("parsing the MachineConfig")?;
    let config = doc
        .get("spec")
        .and_then(|s| s.get("config"))
        .context("a MachineConfig needs spec.config")?;
    let mut files = Vec::new();
    let seq = |v: Option<&Value>| -> Vec<Value> {
        v.and_then(Value::as_sequence).cloned().unwrap_or_default()
    };
    for f in seq(config.get("storage").and_then(|s| s.get("files"))) {
        let path = str_at(&f, &["path"])
            .context("storage.files[]: path is required")?
            .to_string();
        let mode = f
            .get("mode")
            .and_then(Value::as_u64)
            .map_or(0o644, |m| m as u32);
        let contents = match str_at(&f, &["contents", "source"]) {
            Some(src) => data_url(src).with_context(|| format!("file {path}"))?,
            None => Vec::new(),
        };
        files.push(NodeFile {
            path,
            mode,
            contents,
        });
    }
    let mut units = Vec::new();
    for u in seq(config.get("systemd").and_then(|s| s.get("units"))) {
        let name = str_at(&u, &["name"])
            .context("systemd.units[]: name is required")?
            .to_string();
        if name.contains('/') || name.starts_with('.') {
            bail!("systemd.units[]: invalid unit name {name:?}");
        }
        units.push(NodeUnit {
            contents: str_at(&u, &["contents"]).map(str::to_string),
            enabled: u.get("enabled").and_then(Value::as_bool),
            mask: u.get("mask").and_then(Value::as_bool).unwrap_or(false),
            name,
        });
    }
    Ok((files, units))
}

/// Decode an RFC 2397 `data:` URL (Ignition's file sources): `data:[type][;base64],DATA`.
pub fn data_url(s: &str) -> Result<Vec<u8>> {
    let rest = s
        .strip_prefix("data:")
        .with_context(|| format!("only data: URLs are supported on a node, not {s:.40}"))?;
    let (meta, data) = rest.split_once(',').context("a data: URL needs a comma")?;
    if meta.ends_with(";base64") {
        let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(percent_decode(&compact)?)
            .context("invalid base64 in a data: URL");
    }
    percent_decode(data)
}

fn percent_decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("bad percent escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// `WantedBy=` and `RequiredBy=` targets of a unit's `[Install]` section, as
/// `(target, "wants"|"requires")`.
pub fn install_links(unit: &str) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let mut in_install = false;
    for line in unit.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        for (key, dir) in [("WantedBy=", "wants"), ("RequiredBy=", "requires")] {
            if let Some(v) = l.strip_prefix(key) {
                out.extend(v.split_whitespace().map(|t| (t.to_string(), dir)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            name: name.into(),
            namespace: "ns".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            binary_data: BTreeMap::new(),
            path: "x".into(),
        }
    }

    #[test]
    fn version_labels() {
        for (label, v, want) in [
            ("4.16.3", "4.16.3", true),
            ("4.16", "4.16.3", true),
            ("4.16", "4.17.0", false),
            ("4.16.2", "4.16.3", false),
            ("4", "4.16.3", false),
        ] {
            assert_eq!(version_matches(label, v), want, "{label} {v}");
        }
    }

    #[test]
    fn filter_and_waves() {
        let m = |name: &str, wave: Option<&str>, label: Option<&str>| {
            let mut s = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n");
            if let Some(l) = label {
                s.push_str(&format!("  labels:\n    {TARGET_VERSION_LABEL}: \"{l}\"\n"));
            }
            if let Some(w) = wave {
                s.push_str(&format!(
                    "  annotations:\n    {APPLY_WAVE_ANNOTATION}: \"{w}\"\n"
                ));
            }
            s
        };
        let a = m("a", Some("10"), None);
        let b = m("b", None, None);
        let c = m("c", Some("2"), Some("1.1"));
        let d = m("d", Some("2"), Some("9.9.9"));
        let two = format!(
            "{}---\n{}",
            m("e", Some("-1"), None),
            m("f", Some("2"), None)
        );
        let cms = vec![
            cm(
                "one",
                &[],
                &[
                    ("a.yaml", &a),
                    ("b.yaml", &b),
                    ("c.yaml", &c),
                    ("d.yaml", &d),
                ],
            ),
            cm("two", &[], &[("multi.yaml", &two)]),
            cm("old", &[(TARGET_VERSION_LABEL, "1.0")], &[("x.yaml", &a)]),
        ];
        let (ms, skipped) = collect(&cms, "1.1.0").unwrap();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0].contains("ConfigMap d") || skipped.iter().any(|s| s.contains("ConfigMap d"))
        );
        let waves: Vec<(String, Vec<String>)> = by_wave(ms)
            .into_iter()
            .map(|(w, v)| (w, v.into_iter().map(|m| m.name).collect()))
            .collect();
        assert_eq!(
            waves,
            vec![
                ("-1".to_string(), vec!["e".to_string()]),
                ("2".into(), vec!["c".into(), "f".into()]),
                ("10".into(), vec!["a".into()]),
                ("unset".into(), vec!["b".into()]),
            ]
        );
        let bad = cm(
            "bad",
            &[],
            &[(
                "k",
                "kind: X\nmetadata:\n  name: y\n  annotations:\n    lca.openshift.io/apply-wave: soon\n",
            )],
        );
        assert!(format!("{:#}", collect(&[bad], "1.1.0").unwrap_err()).contains("not an integer"));
    }

    #[test]
    fn machine_config_files_and_units() {
        let text = "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: x\nspec:\n  config:\n    ignition:\n      version: 3.2.0\n    storage:\n      files:\n      - path: /etc/a.conf\n        mode: 384\n        contents:\n          source: data:,hello%20world%0A\n      - path: /var/b\n        contents:\n          source: data:text/plain;base64,aGk=\n    systemd:\n      units:\n      - name: x.service\n        enabled: true\n        contents: \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n\"\n";
        let (files, units) = machine_config(text).unwrap();
        assert_eq!(
            files,
            vec![
                NodeFile {
                    path: "/etc/a.conf".into(),
                    mode: 0o600,
                    contents: b"hello world\n".to_vec()
                },
                NodeFile {
                    path: "/var/b".into(),
                    mode: 0o644,
                    contents: b"hi".to_vec()
                }
            ]
        );
        assert_eq!(units[0].enabled, Some(true));
        assert_eq!(
            install_links(units[0].contents.as_deref().unwrap()),
            vec![("multi-user.target".to_string(), "wants")]
        );
        assert!(data_url("https://example.com/x").is_err());
    }
}
