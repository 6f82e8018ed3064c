//! From a parsed document to [`Desired`]: generation checks, typed reading, normalisation and
//! the semantic rules LCA's CRD cannot express.
//!
//! Order matters for the quality of messages: the things a user gets wrong first (`apiVersion`,
//! `kind`, a misspelt field, an unknown stage) are checked on the untyped value, where the
//! message can be specific; only then is the value read into the wire types, whose serde errors
//! are a fallback for wrong types. Every problem carries the YAML path, and the caller adds the
//! line and column.
//!
//! The seed reference is not used while `spec.stage` is `Idle`, and the product docs' examples
//! are Idle documents full of placeholders (`image: <seed_container_image>`), so problems with it
//! are warnings then and errors for every other stage.

use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::names::check_object_name;
use super::suggest::{SchemaDoc, closest};
use super::wire::{self, annotations as ann};
use super::yaml::{Problem, Seg, YamlPath};
use super::{ApiVersion, Desired, Stage};

mod normalise;

use normalise::Common;

const BOTH_VERSIONS: &str = "expected lca.openshift.io/v1 or lca.openshift.io/v1alpha1";
const STAGES: &str = "Idle, Prep, Upgrade, Rollback";

fn schema(api: ApiVersion) -> &'static SchemaDoc {
    static V1ALPHA1: OnceLock<SchemaDoc> = OnceLock::new();
    static V1: OnceLock<SchemaDoc> = OnceLock::new();
    match api {
        ApiVersion::V1Alpha1 => V1ALPHA1.get_or_init(|| {
            SchemaDoc::new(wire::schema_value::<wire::ImageBasedUpgradeV1Alpha1>())
        }),
        ApiVersion::V1 => {
            V1.get_or_init(|| SchemaDoc::new(wire::schema_value::<wire::ImageBasedUpgradeV1>()))
        }
    }
}

/// Validates a parsed document. `text` is the source, used only to locate problems. Returns the
/// desired state and warnings, or the first error.
pub fn desired(value: Value, text: &str) -> Result<(Desired, Vec<Problem>), Problem> {
    let mut warnings = Vec::new();
    let Value::Mapping(mut top) = value else {
        return Err(Problem::new(format!(
            "the document must be a mapping (an ImageBasedUpgrade), got {}",
            kind_of(&value)
        )));
    };
    let api = api_version(&top)?;
    check_kind(&top)?;
    if top.contains_key("status") {
        warnings.push(
            Problem::at(
                YamlPath::dotted("status"),
                "ignored: ibu keeps its own status (see `ibu status`)",
            )
            .located(text, true),
        );
        top.remove("status");
    }
    schema(api)
        .check_unknown_mapping(&top, &|p| generation_hint(api, p))
        .map_err(|p| p.located(text, true))?;
    precheck(api, &mut top).map_err(|p| p.located(text, false))?;
    let common = match api {
        ApiVersion::V1Alpha1 => Common::from_v1alpha1(typed(top, text)?),
        ApiVersion::V1 => Common::from_v1(typed(top, text)?),
    };
    let desired = common
        .normalise(&mut warnings)
        .map_err(|p| p.located(text, false))?;
    let warnings = warnings
        .into_iter()
        .map(|w| w.located(text, false))
        .collect();
    Ok((desired, warnings))
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn api_version(top: &Mapping) -> Result<ApiVersion, Problem> {
    let path = YamlPath::dotted("apiVersion");
    match top.get("apiVersion") {
        None => Err(Problem::at(path, format!("missing; {BOTH_VERSIONS}"))),
        Some(Value::String(s)) if s == wire::API_VERSION_V1 => Ok(ApiVersion::V1),
        Some(Value::String(s)) if s == wire::API_VERSION_V1ALPHA1 => Ok(ApiVersion::V1Alpha1),
        Some(Value::String(s)) => Err(Problem::at(
            path,
            format!("unsupported apiVersion {s:?}; {BOTH_VERSIONS}"),
        )),
        Some(v) => Err(Problem::at(
            path,
            format!("must be a string, got {}; {BOTH_VERSIONS}", kind_of(v)),
        )),
    }
}

fn check_kind(top: &Mapping) -> Result<(), Problem> {
    let path = YamlPath::dotted("kind");
    match top.get("kind") {
        None => Err(Problem::at(
            path,
            format!("missing; expected {}", wire::KIND),
        )),
        Some(Value::String(s)) if s == wire::KIND => Ok(()),
        Some(Value::String(s)) if s.eq_ignore_ascii_case(wire::KIND) => Err(Problem::at(
            path,
            format!(
                "expected {}, got {s:?} (kinds are case-sensitive)",
                wire::KIND
            ),
        )),
        Some(Value::String(s)) => Err(Problem::at(
            path,
            format!(
                "expected {}, got {s:?}; ibu reads only ImageBasedUpgrade documents",
                wire::KIND
            ),
        )),
        Some(v) => Err(Problem::at(
            path,
            format!(
                "must be a string, got {}; expected {}",
                kind_of(v),
                wire::KIND
            ),
        )),
    }
}

/// Hints for unknown fields that have a known explanation.
fn generation_hint(api: ApiVersion, path: &YamlPath) -> Option<String> {
    let keys: Vec<&str> = path
        .0
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.as_str(),
            Seg::Index(_) => "[]",
        })
        .collect();
    let v1 = wire::API_VERSION_V1;
    let alpha = wire::API_VERSION_V1ALPHA1;
    match (api, keys.as_slice()) {
        (ApiVersion::V1, ["spec", "additionalImages"]) => Some(format!(
            "removed in {v1} (it exists only in {alpha}, and LCA never used it)"
        )),
        (ApiVersion::V1, ["spec", "autoRollbackOnFailure", field]) => {
            let annotation = match *field {
                "disabledForPostRebootConfig" => ann::AUTO_ROLLBACK_POST_REBOOT_CONFIG,
                "disabledForUpgradeCompletion" => ann::AUTO_ROLLBACK_UPGRADE_COMPLETION,
                "disabledInitMonitor" => ann::AUTO_ROLLBACK_INIT_MONITOR,
                _ => return None,
            };
            Some(format!(
                "not in {v1}; use the annotation metadata.annotations[\"{annotation}\"]: \"Disabled\""
            ))
        }
        (_, [field])
            if ["stage", "seedImageRef", "oadpContent", "extraManifests"].contains(field) =>
        {
            Some(format!(
                "unknown field; it belongs under spec: (spec.{field})"
            ))
        }
        (_, [field]) if ["name", "namespace", "annotations", "labels"].contains(field) => Some(
            format!("unknown field; it belongs under metadata: (metadata.{field})"),
        ),
        (_, ["spec", field]) if ["annotations", "labels", "name", "namespace"].contains(field) => {
            Some(format!(
                "unknown field; it belongs under metadata: (metadata.{field})"
            ))
        }
        _ => None,
    }
}

/// Checks that give better messages on the untyped value than serde would, and the one lenient
/// conversion (an unquoted `version: 4.15` is a YAML number; it is read as the string "4.15" so
/// that the version rules report it).
fn precheck(api: ApiVersion, top: &mut Mapping) -> Result<(), Problem> {
    let name_path = YamlPath::dotted("metadata.name");
    let name = match top.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Mapping(m)) => m.get("name"),
        Some(v) => {
            return Err(Problem::at(
                YamlPath::dotted("metadata"),
                format!("must be a mapping, got {}", kind_of(v)),
            ));
        }
    };
    match (api, name) {
        (ApiVersion::V1, Some(Value::String(n))) if n == wire::SINGLETON_NAME => {}
        (ApiVersion::V1, other) => {
            let got = match other {
                Some(Value::String(n)) => format!(", got {n:?}"),
                Some(v) => format!(", got {}", kind_of(v)),
                None => ", but it is missing".to_string(),
            };
            return Err(Problem::at(
                name_path,
                format!("ibu is a singleton, metadata.name must be 'upgrade'{got}"),
            ));
        }
        (ApiVersion::V1Alpha1, None) => {
            return Err(Problem::at(name_path, "missing; every object needs a name"));
        }
        (ApiVersion::V1Alpha1, Some(Value::String(n))) => {
            check_object_name(n).map_err(|m| Problem::at(name_path, m))?;
        }
        (ApiVersion::V1Alpha1, Some(v)) => {
            return Err(Problem::at(
                name_path,
                format!("must be a string, got {}", kind_of(v)),
            ));
        }
    }

    let spec_path = YamlPath::dotted("spec");
    let spec = match top.get_mut("spec") {
        None | Some(Value::Null) => {
            return Err(Problem::at(
                spec_path,
                format!("missing; an ImageBasedUpgrade needs at least spec.stage ({STAGES})"),
            ));
        }
        Some(Value::Mapping(m)) => m,
        Some(v) => {
            return Err(Problem::at(
                spec_path,
                format!("must be a mapping, got {}", kind_of(v)),
            ));
        }
    };
    let stage_path = YamlPath::dotted("spec.stage");
    match spec.get("stage") {
        None | Some(Value::Null) => {
            return Err(Problem::at(
                stage_path,
                format!("missing; expected one of {STAGES}"),
            ));
        }
        Some(Value::String(s)) => {
            if s.parse::<Stage>().is_err() {
                let names = Stage::ALL.map(Stage::as_str);
                let hint = closest(s, names)
                    .map(|c| format!("; did you mean {c:?}?"))
                    .unwrap_or_default();
                return Err(Problem::at(
                    stage_path,
                    format!("unknown stage {s:?}{hint} (expected one of {STAGES})"),
                ));
            }
        }
        Some(v) => {
            return Err(Problem::at(
                stage_path,
                format!(
                    "must be a string, got {}; expected one of {STAGES}",
                    kind_of(v)
                ),
            ));
        }
    }
    if let Some(Value::Mapping(seed)) = spec.get_mut("seedImageRef") {
        if let Some(v @ Value::Number(_)) = seed.get_mut("version") {
            let s = match &*v {
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            *v = Value::String(s);
        }
        if api == ApiVersion::V1
            && let Some(Value::String(s)) = seed.get("pullSecretRef")
        {
            return Err(Problem::at(
                YamlPath::dotted("spec.seedImageRef.pullSecretRef"),
                format!(
                    "{} takes a reference, not a plain name; write `pullSecretRef: {{name: {s}}}`",
                    wire::API_VERSION_V1
                ),
            ));
        }
    }
    Ok(())
}

/// Reads the value into a wire type; serde's errors get the path and friendlier wording.
fn typed<T: DeserializeOwned>(top: Mapping, text: &str) -> Result<T, Problem> {
    typed_raw(Value::Mapping(top)).map_err(|(path, raw)| {
        let (path, message) = match raw
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
        {
            Some(field) => (path.key(field), "missing (required)".to_string()),
            None => {
                let mut m = friendly(&raw);
                if matches!(path.0.first(), Some(Seg::Key(k)) if k == "metadata")
                    && path.0.len() == 3
                    && m.starts_with("invalid type")
                {
                    m.push_str(" (label and annotation values are strings; quote the value)");
                }
                (path, m)
            }
        };
        Problem::at(path, message).located(text, false)
    })
}

/// Reads a value into a type, returning serde's raw message and the path it is about.
pub(super) fn typed_raw<T: DeserializeOwned>(value: Value) -> Result<T, (YamlPath, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = YamlPath::root();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
                serde_path_to_error::Segment::Map { key } => path = path.key(key),
                serde_path_to_error::Segment::Enum { variant } => path = path.key(variant),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        (path, e.inner().to_string())
    })
}

/// Rewrites serde's Rust-flavoured wording for YAML users.
pub(super) fn friendly(msg: &str) -> String {
    let mut m = msg.to_string();
    for (from, to) in [
        ("invalid type: map", "invalid type: mapping"),
        ("invalid type: sequence", "invalid type: list"),
        ("unit value", "null"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping"),
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected a borrowed string", "expected a string"),
    ] {
        m = m.replace(from, to);
    }
    if let Some(i) = m.find("expected struct ") {
        m.replace_range(i.., "expected a mapping");
    }
    if let Some(i) = m.find("expected enum ") {
        m.replace_range(i.., "expected a string");
    }
    m
}
