//! Workload backups (`spec.oadpContent`) on a node: what to carry across the pivot, by wave.
//!
//! LCA's `oadpContent` ConfigMaps hold Velero `Backup` and `Restore` objects, which OADP runs
//! against the cluster's API (namespaces, resources, persistent volumes) before the pivot and
//! after it, ordered by the `lca.openshift.io/apply-wave` annotation. A node has no API server
//! and no Velero; what a node-level workload needs carried is its data on disk. So an
//! `oadpContent` ConfigMap on an ibu node holds **`NodeBackup`** documents (one per data key,
//! like LCA's), with the same wave annotation:
//!
//! ```yaml
//! apiVersion: ibu/v1
//! kind: NodeBackup
//! metadata:
//!   name: app
//!   annotations:
//!     lca.openshift.io/apply-wave: "1"      # ascending; without it: last
//! spec:
//!   paths: [/var/lib/app, /etc/app]         # files or directories under /var or /etc
//!   podmanVolumes: [app-data]               # podman volumes (exported, re-imported)
//! ```
//!
//! | LCA / Velero | ibu |
//! |---|---|
//! | `Backup` (velero.io/v1): what to save | `NodeBackup`: `spec.paths`, `spec.podmanVolumes` |
//! | `Restore` (velero.io/v1): what to restore from which backup | implied: every `NodeBackup` is restored after the pivot |
//! | `apply-wave` on both | `apply-wave` on the `NodeBackup`: backed up and restored in ascending order |
//! | backups in object storage (S3) | backups in the new stateroot's `/var/lib/ibu/workspace/backup` |
//!
//! A Velero object in an `oadpContent` ConfigMap is refused with this mapping in the message.
//! `/var` is per stateroot, so a path under `/var` exists in the new stateroot only if it is
//! backed up (the seed brings its own `/var`); podman volumes live on the shared
//! `/var/lib/containers` and survive the pivot anyway — their backup is the state at the pivot,
//! restored over whatever the volume holds after it, as OADP restores a volume.

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::manifests::{APPLY_WAVE_ANNOTATION, wave_label};
use crate::spec::refs::ConfigMap;

pub const API_VERSION: &str = "ibu/v1";
pub const KIND: &str = "NodeBackup";

/// One `NodeBackup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBackup {
    /// `<namespace>_<configmap>_<name>`: unique, and a safe directory name.
    pub id: String,
    pub wave: Option<i64>,
    pub paths: Vec<String>,
    pub podman_volumes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Doc {
    api_version: String,
    kind: String,
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    podman_volumes: Vec<String>,
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with('.')
}

/// A path a backup may name: absolute, normal components, under `/var` or `/etc`, not in the
/// shared container storage or ibu's own state.
fn check_path(p: &str) -> Result<()> {
    let path = std::path::Path::new(p);
    if !path.is_absolute()
        || path.components().any(|c| {
            !matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
    {
        bail!("path {p:?} must be absolute, without . or ..");
    }
    let ok_root = p.starts_with("/var/") || p.starts_with("/etc/");
    let forbidden = ["/var/lib/containers", "/var/lib/ibu", "/etc/ibu"]
        .iter()
        .any(|f| p == *f || p.starts_with(&format!("{f}/")));
    if !ok_root || forbidden {
        bail!(
            "path {p:?} must be under /var or /etc, and not in /var/lib/containers (shared, \
             survives the pivot), /var/lib/ibu or /etc/ibu (ibu carries those itself)"
        );
    }
    Ok(())
}

/// Every `NodeBackup` in `cms`, in wave order (ascending, unset last; ConfigMap order within).
pub fn collect(cms: &[ConfigMap]) -> Result<Vec<NodeBackup>> {
    let mut out = Vec::new();
    for cm in cms {
        for (key, text) in &cm.data {
            let src = format!("ConfigMap {}/{} key {key}", cm.namespace, cm.name);
            let v: serde_yaml::Value =
                serde_yaml::from_str(text).with_context(|| format!("{src}: not YAML"))?;
            let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            let api = v
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            if api.starts_with("velero.io/") {
                bail!(
                    "{src}: a Velero {kind} is a cluster object; on a node write a NodeBackup \
                     (apiVersion {API_VERSION}, spec.paths and spec.podmanVolumes; the Restore \
                     is implied) — see README, \"Backups\""
                );
            }
            let doc: Doc = serde_yaml::from_value(v).with_context(|| src.clone())?;
            if doc.api_version != API_VERSION || doc.kind != KIND {
                bail!(
                    "{src}: expected apiVersion {API_VERSION} kind {KIND}, got {} {}",
                    doc.api_version,
                    doc.kind
                );
            }
            let _ = (&doc.metadata.namespace, &doc.metadata.labels);
            if !safe_name(&doc.metadata.name) {
                bail!("{src}: invalid metadata.name {:?}", doc.metadata.name);
            }
            let wave = match doc.metadata.annotations.get(APPLY_WAVE_ANNOTATION) {
                None => None,
                Some(w) => Some(w.trim().parse::<i64>().with_context(|| {
                    format!("{src}: {APPLY_WAVE_ANNOTATION} {w:?} is not an integer")
                })?),
            };
            for p in &doc.spec.paths {
                check_path(p).with_context(|| src.clone())?;
            }
            for v in &doc.spec.podman_volumes {
                if !safe_name(v) {
                    bail!("{src}: invalid podman volume name {v:?}");
                }
            }
            out.push(NodeBackup {
                id: format!("{}_{}_{}", cm.namespace, cm.name, doc.metadata.name),
                wave,
                paths: doc.spec.paths,
                podman_volumes: doc.spec.podman_volumes,
            });
        }
    }
    out.sort_by_key(|b| (b.wave.is_none(), b.wave.unwrap_or(0)));
    Ok(out)
}

impl NodeBackup {
    /// Directory of this backup below the backup root: `<wave>/<id>`.
    pub fn dir(&self) -> String {
        format!("{}/{}", wave_label(self.wave), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cm(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            name: "oadp".into(),
            namespace: "openshift-adp".into(),
            labels: BTreeMap::new(),
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
    fn node_backups_in_wave_order() {
        let doc = |name: &str, wave: Option<&str>, paths: &str| {
            let ann = wave
                .map(|w| format!("  annotations:\n    {APPLY_WAVE_ANNOTATION}: \"{w}\"\n"))
                .unwrap_or_default();
            format!(
                "apiVersion: ibu/v1\nkind: NodeBackup\nmetadata:\n  name: {name}\n{ann}spec:\n  paths: [{paths}]\n  podmanVolumes: [vol-{name}]\n"
            )
        };
        let c = cm(&[
            ("a", &doc("late", None, "/var/lib/late")),
            ("b", &doc("two", Some("2"), "/etc/two.conf")),
            ("c", &doc("one", Some("1"), "/var/lib/one")),
        ]);
        let bs = collect(&[c]).unwrap();
        let names: Vec<&str> = bs.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(
            names,
            [
                "openshift-adp_oadp_one",
                "openshift-adp_oadp_two",
                "openshift-adp_oadp_late"
            ]
        );
        assert_eq!(bs[0].dir(), "1/openshift-adp_oadp_one");
        assert_eq!(bs[2].dir(), "unset/openshift-adp_oadp_late");
        for bad in [
            "/var/lib/containers/storage",
            "/usr/lib/x",
            "var/x",
            "/var/../etc/x",
            "/etc/ibu/x",
        ] {
            let e = collect(&[cm(&[("k", &doc("x", None, bad))])]).unwrap_err();
            assert!(format!("{e:#}").contains("must be"), "{bad}: {e:#}");
        }
        let velero = cm(&[(
            "k",
            "apiVersion: velero.io/v1\nkind: Backup\nmetadata:\n  name: x\n",
        )]);
        let e = format!("{:#}", collect(&[velero]).unwrap_err());
        assert!(e.contains("write a NodeBackup"), "{e}");
    }
}
