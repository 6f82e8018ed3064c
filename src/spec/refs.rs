//! ConfigMaps and Secrets referenced by the desired document, resolved to a drop-in tree.
//!
//! On a cluster, `extraManifests`, `oadpContent`, `additionalImages` and `pullSecretRef` name
//! objects in the API server. A node has no API server, so ibu reads the same objects, in their
//! ordinary Kubernetes YAML form, from files under the config dir (`/etc/ibu`, see
//! [`crate::paths::Paths::config_dir`]) that Ignition or a MachineConfig can deliver:
//!
//! ```text
//! /etc/ibu/
//! ├── upgrade.yaml                          the ImageBasedUpgrade
//! ├── configmaps/<namespace>/<name>.yaml    a ConfigMap (apiVersion v1, kind ConfigMap,
//! │                                           data, optional binaryData)
//! └── secrets/<namespace>/<name>.yaml       a Secret (apiVersion v1, kind Secret, data in
//!                                             base64 and/or stringData, type); mode 0600 or
//!                                             stricter, owned by root
//! ```
//!
//! `metadata.name` must match the file name and `metadata.namespace`, when present, the
//! directory: a file copied to the wrong place is an error, not a silent substitute. Names are
//! checked as Kubernetes checks them ([`super::names`]), which also keeps them from escaping the
//! tree. A `pullSecretRef` has no namespace of its own; it is looked up in the document's
//! namespace (default `openshift-lifecycle-agent`).
//!
//! Files are read with the same care as the desired document (regular files only, size limit
//! [`MAX_DROPIN_BYTES`] while reading, text checks, guarded YAML parse). Secrets additionally
//! must not be readable by anyone but root, their values are held in [`SecretValue`] (which
//! never prints and cannot be serialized), and no error message ever contains a secret value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_yaml::Value;

use super::image_ref::ImageRef;
use super::names::{check_data_key, check_namespace, check_object_name};
use super::suggest::SchemaDoc;
use super::validate::{friendly, kind_of, typed_raw};
use super::wire::{self, ObjectMeta};
use super::yaml::{self, Problem, ReadError, YamlPath};
use super::{Desired, ObjectRef};

mod secret;

pub use secret::{PullSecret, Secret, SecretValue, pull_secret, secret};

/// Subdirectory of the config dir holding ConfigMaps.
pub const CONFIGMAPS_DIR: &str = "configmaps";
/// Subdirectory of the config dir holding Secrets.
pub const SECRETS_DIR: &str = "secrets";

/// Largest ConfigMap or Secret file ibu reads. Kubernetes caps the *data* of one object at
/// 1 MiB; the YAML form adds metadata and base64 (4/3 for `binaryData`), so files get twice that.
pub const MAX_DROPIN_BYTES: usize = 2 << 20;

/// Data key of an `additionalImages` ConfigMap: one image pull-spec per line.
///
/// LCA never read `spec.additionalImages` (it was removed from the CRD as unused in 2024). The
/// one image-list ConfigMap LCA did define is its precache ConfigMap (`lca-precache-cm`), whose
/// data key `images.txt` holds one pull-spec per line, empty lines ignored; ibu reads the
/// `additionalImages` ConfigMap in that same format, and also skips lines starting with `#`.
pub const ADDITIONAL_IMAGES_KEY: &str = "images.txt";

/// Why a referenced ConfigMap or Secret cannot be used. Messages name the object and the file
/// and never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("{what} {reference}: invalid reference: {message}")]
    InvalidName {
        what: &'static str,
        reference: ObjectRef,
        message: String,
    },
    #[error(
        "{what} {reference}: {} does not exist; deliver it with Ignition or a MachineConfig",
        path.display()
    )]
    NotFound {
        what: &'static str,
        reference: ObjectRef,
        path: PathBuf,
    },
    #[error("{what} {reference}: {}: {reason}", path.display())]
    Insecure {
        what: &'static str,
        reference: ObjectRef,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {reference}: {}: {message}", path.display())]
    Invalid {
        what: &'static str,
        reference: ObjectRef,
        path: PathBuf,
        message: String,
    },
    #[error("{what} {reference}: cannot read {}: {source}", path.display())]
    Io {
        what: &'static str,
        reference: ObjectRef,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The two kinds of object in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind {
    ConfigMap,
    Secret,
}

impl ObjKind {
    fn name(self) -> &'static str {
        match self {
            ObjKind::ConfigMap => "ConfigMap",
            ObjKind::Secret => "Secret",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            ObjKind::ConfigMap => CONFIGMAPS_DIR,
            ObjKind::Secret => SECRETS_DIR,
        }
    }
}

/// A file of the tree being read: builds errors that name the object and the file.
pub(crate) struct Target<'a> {
    kind: ObjKind,
    reference: &'a ObjectRef,
    path: PathBuf,
}

impl<'a> Target<'a> {
    /// Validates the reference and computes `<dir>/<kind dir>/<namespace>/<name>.yaml`.
    fn new(dir: &Path, kind: ObjKind, reference: &'a ObjectRef) -> Result<Target<'a>, RefError> {
        let bad = |message: String| RefError::InvalidName {
            what: kind.name(),
            reference: reference.clone(),
            message,
        };
        check_object_name(&reference.name).map_err(|m| bad(format!("name {m}")))?;
        check_namespace(&reference.namespace).map_err(|m| bad(format!("namespace {m}")))?;
        let path = dir
            .join(kind.dir())
            .join(&reference.namespace)
            .join(format!("{}.yaml", reference.name));
        Ok(Target {
            kind,
            reference,
            path,
        })
    }

    fn invalid(&self, message: impl Into<String>) -> RefError {
        RefError::Invalid {
            what: self.kind.name(),
            reference: self.reference.clone(),
            path: self.path.clone(),
            message: yaml::one_line(&message.into()),
        }
    }

    fn insecure(&self, reason: String) -> RefError {
        RefError::Insecure {
            what: self.kind.name(),
            reference: self.reference.clone(),
            path: self.path.clone(),
            reason,
        }
    }

    fn read_error(&self, e: ReadError) -> RefError {
        match e {
            ReadError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => RefError::NotFound {
                what: self.kind.name(),
                reference: self.reference.clone(),
                path: self.path.clone(),
            },
            ReadError::Io(source) => RefError::Io {
                what: self.kind.name(),
                reference: self.reference.clone(),
                path: self.path.clone(),
                source,
            },
            other => self.invalid(other.to_string()),
        }
    }

    /// Opens the file, lets `check` inspect its metadata (mode, owner) before anything is read,
    /// then reads and parses it, checks `apiVersion`, `kind` and the name, and the fields
    /// against `T`'s schema, and reads it into `T`. With `redact`, serde's messages (which may
    /// quote values) are replaced by a neutral one.
    fn load<T>(
        &self,
        check: impl FnOnce(&std::fs::Metadata) -> Result<(), RefError>,
        redact: bool,
    ) -> Result<T, RefError>
    where
        T: serde::de::DeserializeOwned + JsonSchema,
    {
        let (file, meta) = yaml::open_regular(&self.path).map_err(|e| self.read_error(e))?;
        check(&meta)?;
        let bytes = yaml::read_limited(file, MAX_DROPIN_BYTES).map_err(|e| self.read_error(e))?;
        let problem = |p: Problem| self.invalid(p.render());
        let text = yaml::decode(&bytes).map_err(problem)?;
        let value = yaml::parse(text).map_err(problem)?;
        let Value::Mapping(top) = &value else {
            return Err(self.invalid(format!(
                "must be a {} (a YAML mapping), got {}",
                self.kind.name(),
                kind_of(&value)
            )));
        };
        self.check_header(top)
            .map_err(|p| problem(p.located(text, false)))?;
        SchemaDoc::new(wire::schema_value::<T>())
            .check_unknown(&value, &|_| None)
            .map_err(|p| problem(p.located(text, true)))?;
        typed_raw::<T>(value).map_err(|(path, raw)| {
            let message = if redact {
                "invalid value (not shown: this is a Secret)".to_string()
            } else {
                friendly(&raw)
            };
            problem(Problem::at(path, message).located(text, false))
        })
    }

    fn check_header(&self, top: &serde_yaml::Mapping) -> Result<(), Problem> {
        let want_kind = self.kind.name();
        let string = |k: &str| top.get(k).and_then(Value::as_str);
        if string("apiVersion") != Some("v1") {
            return Err(Problem::at(
                YamlPath::dotted("apiVersion"),
                format!("must be \"v1\" for a {want_kind}"),
            ));
        }
        if string("kind") != Some(want_kind) {
            return Err(Problem::at(
                YamlPath::dotted("kind"),
                format!(
                    "must be {want_kind:?} (this file is in {}/)",
                    self.kind.dir()
                ),
            ));
        }
        let meta = top.get("metadata").and_then(Value::as_mapping);
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        match field("name") {
            Some(n) if n == self.reference.name => {}
            Some(n) => {
                return Err(Problem::at(
                    YamlPath::dotted("metadata.name"),
                    format!(
                        "{n:?} does not match the file name (expected {:?})",
                        self.reference.name
                    ),
                ));
            }
            None => {
                return Err(Problem::at(
                    YamlPath::dotted("metadata.name"),
                    format!("missing (expected {:?})", self.reference.name),
                ));
            }
        }
        if let Some(ns) = field("namespace")
            && ns != self.reference.namespace
        {
            return Err(Problem::at(
                YamlPath::dotted("metadata.namespace"),
                format!(
                    "{ns:?} does not match the directory (expected {:?})",
                    self.reference.namespace
                ),
            ));
        }
        Ok(())
    }
}

/// Path of a ConfigMap in the drop-in tree under `dir` (the config dir, `/etc/ibu`).
pub fn config_map_path(dir: &Path, r: &ObjectRef) -> Result<PathBuf, RefError> {
    Target::new(dir, ObjKind::ConfigMap, r).map(|t| t.path)
}

/// Path of a Secret in the drop-in tree under `dir`.
pub fn secret_path(dir: &Path, r: &ObjectRef) -> Result<PathBuf, RefError> {
    Target::new(dir, ObjKind::Secret, r).map(|t| t.path)
}

/// A ConfigMap as delivered in the drop-in tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMap {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, String>,
    /// `binaryData`, base64-decoded.
    pub binary_data: BTreeMap<String, Vec<u8>>,
    /// The file it was read from.
    pub path: PathBuf,
}

/// Wire form of a ConfigMap file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigMapDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: ObjectMeta<String>,
    data: Option<BTreeMap<String, String>>,
    binary_data: Option<BTreeMap<String, String>>,
    #[allow(dead_code)]
    immutable: Option<bool>,
}

/// Reads the ConfigMap `r` from the tree under `dir`.
pub fn config_map(dir: &Path, r: &ObjectRef) -> Result<ConfigMap, RefError> {
    let t = Target::new(dir, ObjKind::ConfigMap, r)?;
    let doc: ConfigMapDoc = t.load(|_| Ok(()), false)?;
    let data = doc.data.unwrap_or_default();
    let mut binary_data = BTreeMap::new();
    for (k, v) in doc.binary_data.unwrap_or_default() {
        let decoded = decode_base64(&v)
            .map_err(|_| t.invalid(format!("binaryData[{k:?}]: not valid base64")))?;
        binary_data.insert(k, decoded);
    }
    for k in data.keys().chain(binary_data.keys()) {
        check_data_key(k).map_err(|m| t.invalid(format!("data: {m}")))?;
    }
    if let Some(k) = data.keys().find(|k| binary_data.contains_key(*k)) {
        return Err(t.invalid(format!("key {k:?} is in both data and binaryData")));
    }
    Ok(ConfigMap {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        labels: doc.metadata.labels.unwrap_or_default(),
        annotations: doc.metadata.annotations.unwrap_or_default(),
        data,
        binary_data,
        path: t.path,
    })
}

/// Standard base64 as Kubernetes writes it; line breaks and spaces (from YAML block scalars)
/// are ignored.
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

/// The images listed in an `additionalImages` ConfigMap (key [`ADDITIONAL_IMAGES_KEY`], one
/// pull-spec per line; empty lines and lines starting with `#` are skipped). Every line must be
/// a valid image reference.
pub fn additional_images(dir: &Path, r: &ObjectRef) -> Result<Vec<ImageRef>, RefError> {
    let cm = config_map(dir, r)?;
    let t = Target::new(dir, ObjKind::ConfigMap, r)?;
    let Some(list) = cm.data.get(ADDITIONAL_IMAGES_KEY) else {
        return Err(t.invalid(format!(
            "has no data key {ADDITIONAL_IMAGES_KEY:?} (one image pull-spec per line)"
        )));
    };
    let mut images = Vec::new();
    for (i, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let image = ImageRef::parse(line).map_err(|e| {
            t.invalid(format!(
                "data[{ADDITIONAL_IMAGES_KEY:?}] line {}: {e}",
                i + 1
            ))
        })?;
        images.push(image);
    }
    Ok(images)
}

/// Every reference of `desired` that cannot be resolved, one line each, prefixed with the
/// field it comes from. Empty when all resolve. Used by `ibu validate` and before Prep.
/// Callers decide how much weight to give them while the stage is Idle.
pub fn check(dir: &Path, desired: &Desired) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ps) = desired.seed.as_ref().and_then(|s| s.pull_secret.as_ref())
        && let Err(e) = pull_secret(dir, ps)
    {
        out.push(format!("spec.seedImageRef.pullSecretRef: {e}"));
    }
    if let Some(ai) = &desired.additional_images
        && let Err(e) = additional_images(dir, ai)
    {
        out.push(format!("spec.additionalImages: {e}"));
    }
    for (field, refs) in [
        ("spec.extraManifests", &desired.extra_manifests),
        ("spec.oadpContent", &desired.oadp_content),
    ] {
        for r in refs {
            if let Err(e) = config_map(dir, r) {
                out.push(format!("{field}: {e}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
