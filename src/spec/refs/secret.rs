//! Secrets from the drop-in tree, handled so that their values cannot leak.
//!
//! - The file must be mode 0600 or stricter and owned by root (or, when ibu itself does not run
//!   as root, as in a directory-sysroot test, by the user running it); anything else is refused
//!   with the command that fixes it. The check uses the metadata of the opened descriptor, before
//!   a byte is read.
//! - Values live in [`SecretValue`]: `Debug` and `Display` print `<redacted>`, it implements no
//!   `Serialize`, and its memory is zeroed when dropped.
//! - Errors quote field names and keys, never values; serde's messages, which may quote a value,
//!   are replaced (see `Target::load`).

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{ObjKind, RefError, Target, decode_base64};
use crate::spec::ObjectRef;
use crate::spec::names::check_data_key;
use crate::spec::wire::ObjectMeta;

/// Key of a pull secret's `.dockerconfigjson` (as in `kubernetes.io/dockerconfigjson` Secrets).
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// A secret value. Prints as `<redacted>`, cannot be serialized, is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }

    /// The value itself. Callers must not log it or put it in an error.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for SecretValue {
    /// Best effort: overwrite the bytes before the allocation is freed, so a value does not
    /// linger in freed memory. `black_box` keeps the writes from being optimised away.
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&mut self.0);
    }
}

/// A Secret as delivered in the drop-in tree. `Debug` shows the keys, not the values.
#[derive(Clone)]
pub struct Secret {
    pub name: String,
    pub namespace: String,
    /// `type` (default `Opaque`).
    pub type_: String,
    /// `data` (decoded) merged with `stringData` (which wins, as in Kubernetes).
    pub data: BTreeMap<String, SecretValue>,
}

impl Secret {
    pub fn get(&self, key: &str) -> Option<&SecretValue> {
        self.data.get(key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("type", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Wire form of a Secret file.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretDoc {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    metadata: ObjectMeta<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    data: Option<BTreeMap<String, String>>,
    string_data: Option<BTreeMap<String, String>>,
    #[allow(dead_code)]
    immutable: Option<bool>,
}

/// Refuses a secret file that others can read or that someone other than root owns.
fn check_private(t: &Target<'_>, meta: &std::fs::Metadata) -> Result<(), RefError> {
    let path = t.path.display();
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(t.insecure(format!(
            "is mode {mode:04o}; a Secret file must be readable by its owner only (mode 0600 or \
             stricter): chmod 600 {path}"
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(t.insecure(format!(
            "is owned by uid {}; a Secret file must be owned by root: chown root:root {path}",
            meta.uid()
        )));
    }
    Ok(())
}

/// Reads the Secret `r` from the tree under `dir` (see the module docs for the checks).
pub fn secret(dir: &Path, r: &ObjectRef) -> Result<Secret, RefError> {
    let t = Target::new(dir, ObjKind::Secret, r)?;
    let doc: SecretDoc = t.load(|meta| check_private(&t, meta), true)?;
    let mut data = BTreeMap::new();
    for (k, v) in doc.data.unwrap_or_default() {
        check_data_key(&k).map_err(|m| t.invalid(format!("data: {m}")))?;
        let bytes =
            decode_base64(&v).map_err(|_| t.invalid(format!("data[{k:?}]: not valid base64")))?;
        data.insert(k, SecretValue(bytes));
    }
    for (k, v) in doc.string_data.unwrap_or_default() {
        check_data_key(&k).map_err(|m| t.invalid(format!("stringData: {m}")))?;
        data.insert(k, SecretValue(v.into_bytes()));
    }
    Ok(Secret {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        type_: doc.type_.unwrap_or_else(|| "Opaque".to_string()),
        data,
    })
}

/// A validated pull secret: `.dockerconfigjson` holding JSON with an `auths` object.
#[derive(Clone)]
pub struct PullSecret {
    pub secret: ObjectRef,
    /// The raw `.dockerconfigjson`, ready to be written as an authfile (mode 0600).
    pub dockerconfigjson: SecretValue,
    /// Registries it has credentials for (keys of `auths`; not secret).
    pub registries: Vec<String>,
}

impl fmt::Debug for PullSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecret")
            .field("secret", &self.secret)
            .field("dockerconfigjson", &self.dockerconfigjson)
            .field("registries", &self.registries)
            .finish()
    }
}

/// Reads the pull secret `r`: a Secret whose `.dockerconfigjson` is JSON with an `auths`
/// object. The JSON is validated without ever echoing it.
pub fn pull_secret(dir: &Path, r: &ObjectRef) -> Result<PullSecret, RefError> {
    let s = secret(dir, r)?;
    let t = Target::new(dir, ObjKind::Secret, r)?;
    let Some(raw) = s.get(DOCKER_CONFIG_JSON_KEY) else {
        let keys: Vec<&str> = s.data.keys().map(String::as_str).collect();
        return Err(t.invalid(format!(
            "has no key {DOCKER_CONFIG_JSON_KEY:?} (keys: {})",
            if keys.is_empty() {
                "none".to_string()
            } else {
                keys.join(", ")
            }
        )));
    };
    let json: serde_json::Value = serde_json::from_slice(raw.expose()).map_err(|e| {
        t.invalid(format!(
            "{DOCKER_CONFIG_JSON_KEY} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Some(auths) = json.get("auths").and_then(serde_json::Value::as_object) else {
        return Err(t.invalid(format!(
            "{DOCKER_CONFIG_JSON_KEY} has no \"auths\" object (expected {{\"auths\": {{\"<registry>\": {{\"auth\": \"...\"}}}}}})"
        )));
    };
    Ok(PullSecret {
        secret: r.clone(),
        registries: auths.keys().cloned().collect(),
        dockerconfigjson: raw.clone(),
    })
}
