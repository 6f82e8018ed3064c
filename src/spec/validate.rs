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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::image_ref::ImageRef;
use super::names::{check_namespace, check_object_name};
use super::suggest::{SchemaDoc, closest};
use super::wire::{self, annotations as ann};
use super::yaml::{Problem, Seg, YamlPath};
use super::{
    ApiVersion, AutoRollback, DEFAULT_DISK_USAGE_THRESHOLD_PERCENT,
    DEFAULT_INIT_MONITOR_TIMEOUT_SECONDS, DEFAULT_NAMESPACE, Desired, ImageCleanup, ObjectRef,
    SeedRef, Stage,
};

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

/// The fields of either generation, in one shape.
struct Common {
    api: ApiVersion,
    name: String,
    namespace: Option<String>,
    annotations: BTreeMap<String, String>,
    stage: Stage,
    seed: Option<WireSeed>,
    additional_images: Option<wire::AdditionalImagesRef>,
    timeout: Option<i64>,
    disabled_post_reboot_config: bool,
    disabled_upgrade_completion: bool,
    disabled_init_monitor: bool,
    extra_manifests: Vec<wire::ConfigMapRef>,
    oadp_content: Vec<wire::ConfigMapRef>,
}

struct WireSeed {
    image: Option<String>,
    version: Option<String>,
    /// The secret name and the path it was written at.
    pull_secret: Option<(String, YamlPath)>,
}

impl Common {
    fn from_v1alpha1(d: wire::ImageBasedUpgradeV1Alpha1) -> Common {
        let s = d.spec;
        let ar = s.auto_rollback_on_failure.unwrap_or_default();
        let flag = |f: Option<wire::StringBool>| f.is_some_and(|b| b.0);
        let seed = s.seed_image_ref.map(|r| {
            let base = YamlPath::dotted("spec.seedImageRef.pullSecretRef");
            WireSeed {
                image: r.image,
                version: r.version,
                pull_secret: match r.pull_secret_ref {
                    // `pullSecretRef: ""`: nothing, like `additionalImages.name: ""`.
                    Some(wire::PullSecretRefV1Alpha1::Name(n)) if n.is_empty() => None,
                    Some(wire::PullSecretRefV1Alpha1::Name(n)) => Some((n, base)),
                    Some(wire::PullSecretRefV1Alpha1::Ref(r)) => Some((r.name, base.key("name"))),
                    None => None,
                },
            }
        });
        Common {
            api: ApiVersion::V1Alpha1,
            name: d.metadata.name.unwrap_or_default(),
            namespace: d.metadata.namespace,
            annotations: d.metadata.annotations.unwrap_or_default(),
            stage: s.stage,
            seed,
            additional_images: s.additional_images,
            timeout: ar.init_monitor_timeout_seconds,
            disabled_post_reboot_config: flag(ar.disabled_for_post_reboot_config),
            disabled_upgrade_completion: flag(ar.disabled_for_upgrade_completion),
            disabled_init_monitor: flag(ar.disabled_init_monitor),
            extra_manifests: s.extra_manifests.unwrap_or_default(),
            oadp_content: s.oadp_content.unwrap_or_default(),
        }
    }

    fn from_v1(d: wire::ImageBasedUpgradeV1) -> Common {
        let s = d.spec;
        let seed = s.seed_image_ref.map(|r| WireSeed {
            image: r.image,
            version: r.version,
            pull_secret: r.pull_secret_ref.map(|p| {
                (
                    p.name,
                    YamlPath::dotted("spec.seedImageRef.pullSecretRef.name"),
                )
            }),
        });
        Common {
            api: ApiVersion::V1,
            name: wire::SINGLETON_NAME.to_string(),
            namespace: d.metadata.namespace,
            annotations: d.metadata.annotations.unwrap_or_default(),
            stage: s.stage,
            seed,
            additional_images: None,
            timeout: s
                .auto_rollback_on_failure
                .and_then(|a| a.init_monitor_timeout_seconds),
            disabled_post_reboot_config: false,
            disabled_upgrade_completion: false,
            disabled_init_monitor: false,
            extra_manifests: s.extra_manifests.unwrap_or_default(),
            oadp_content: s.oadp_content.unwrap_or_default(),
        }
    }

    fn normalise(self, warnings: &mut Vec<Problem>) -> Result<Desired, Problem> {
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        check_namespace(&namespace)
            .map_err(|m| Problem::at(YamlPath::dotted("metadata.namespace"), m))?;
        let seed = self.seed(&namespace, warnings)?;
        let additional_images = self.additional_images()?;
        let extra_manifests = refs_list("spec.extraManifests", &self.extra_manifests, warnings)?;
        let oadp_content = refs_list("spec.oadpContent", &self.oadp_content, warnings)?;
        let auto_rollback = self.auto_rollback(warnings)?;
        let image_cleanup = self.image_cleanup(warnings)?;
        self.unknown_annotations(warnings);
        Ok(Desired {
            api_version: self.api,
            name: self.name,
            namespace,
            stage: self.stage,
            seed,
            additional_images,
            extra_manifests,
            oadp_content,
            auto_rollback,
            image_cleanup,
            manual_cleanup_done: self.annotations.contains_key(ann::MANUAL_CLEANUP_DONE),
        })
    }

    fn seed(
        &self,
        namespace: &str,
        warnings: &mut Vec<Problem>,
    ) -> Result<Option<SeedRef>, Problem> {
        let base = YamlPath::dotted("spec.seedImageRef");
        let needed = self.stage != Stage::Idle;
        let empty = |s: &Option<String>| s.as_deref().unwrap_or("").is_empty();
        let seed = match &self.seed {
            Some(s) if !(empty(&s.image) && empty(&s.version) && s.pull_secret.is_none()) => s,
            _ if needed => {
                return Err(Problem::at(
                    base,
                    format!(
                        "missing; spec.stage {} needs the seed image and its version",
                        self.stage
                    ),
                ));
            }
            _ => return Ok(None),
        };
        let image = seed.image.clone().unwrap_or_default();
        let version = seed.version.clone().unwrap_or_default();
        let mut problems = Vec::new();
        let placeholder = |v: &str| v.len() > 2 && v.starts_with('<') && v.ends_with('>');
        if placeholder(&image) {
            problems.push(Problem::at(
                base.key("image"),
                format!("{image:?} is a placeholder; replace it with the seed image pull-spec"),
            ));
        } else if image.is_empty() {
            problems.push(Problem::at(
                base.key("image"),
                "missing or empty; set the seed image pull-spec",
            ));
        } else if let Err(e) = ImageRef::parse(&image) {
            problems.push(Problem::at(base.key("image"), e.to_string()));
        }
        if placeholder(&version) {
            problems.push(Problem::at(
                base.key("version"),
                format!("{version:?} is a placeholder; replace it with the target version, e.g. \"4.15.2\""),
            ));
        } else if version.is_empty() {
            problems.push(Problem::at(
                base.key("version"),
                "missing or empty; set the target version, e.g. \"4.15.2\"",
            ));
        } else if semver::Version::parse(&version).is_err() {
            problems.push(Problem::at(
                base.key("version"),
                format!("must be a semantic version like \"4.15.2\", got {version:?}"),
            ));
        }
        if let Some((name, path)) = &seed.pull_secret {
            if placeholder(name) {
                problems.push(Problem::at(
                    path.clone(),
                    format!("{name:?} is a placeholder; replace it with the pull Secret's name"),
                ));
            } else if let Err(m) = check_object_name(name) {
                problems.push(Problem::at(path.clone(), format!("Secret name {m}")));
            }
        }
        if needed {
            if let Some(first) = problems.into_iter().next() {
                return Err(first);
            }
        } else {
            for mut p in problems {
                p.message
                    .push_str(" (only a warning while spec.stage is Idle)");
                warnings.push(p);
            }
        }
        Ok(Some(SeedRef {
            image,
            version,
            pull_secret: seed.pull_secret.as_ref().map(|(name, _)| ObjectRef {
                name: name.clone(),
                namespace: namespace.to_string(),
            }),
        }))
    }

    fn additional_images(&self) -> Result<Option<ObjectRef>, Problem> {
        let base = YamlPath::dotted("spec.additionalImages");
        let Some(r) = &self.additional_images else {
            return Ok(None);
        };
        let name = r.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Ok(None);
        }
        check_object_name(name).map_err(|m| Problem::at(base.key("name"), m))?;
        let namespace = r.namespace.as_deref().unwrap_or("");
        if namespace.is_empty() {
            return Err(Problem::at(
                base.key("namespace"),
                "missing or empty; required when additionalImages.name is set",
            ));
        }
        check_namespace(namespace).map_err(|m| Problem::at(base.key("namespace"), m))?;
        Ok(Some(ObjectRef {
            name: name.to_string(),
            namespace: namespace.to_string(),
        }))
    }

    fn auto_rollback(&self, warnings: &mut Vec<Problem>) -> Result<AutoRollback, Problem> {
        let timeout_path = YamlPath::dotted("spec.autoRollbackOnFailure.initMonitorTimeoutSeconds");
        let init_monitor_timeout_seconds = match self.timeout {
            Some(t) if t < 0 => {
                return Err(Problem::at(timeout_path, format!("must be >= 0, got {t}")));
            }
            None | Some(0) => DEFAULT_INIT_MONITOR_TIMEOUT_SECONDS,
            Some(t) => t.unsigned_abs(),
        };
        let mut disabled =
            |key: &str| self.annotation_disabled(key, "automatic rollback", warnings);
        let post_reboot_config =
            !(self.disabled_post_reboot_config | disabled(ann::AUTO_ROLLBACK_POST_REBOOT_CONFIG));
        let upgrade_completion =
            !(self.disabled_upgrade_completion | disabled(ann::AUTO_ROLLBACK_UPGRADE_COMPLETION));
        let init_monitor =
            !(self.disabled_init_monitor | disabled(ann::AUTO_ROLLBACK_INIT_MONITOR));
        Ok(AutoRollback {
            init_monitor_timeout_seconds,
            init_monitor,
            post_reboot_config,
            upgrade_completion,
        })
    }

    fn image_cleanup(&self, warnings: &mut Vec<Problem>) -> Result<ImageCleanup, Problem> {
        let on_prep =
            !self.annotation_disabled(ann::IMAGE_CLEANUP_ON_PREP, "image cleanup", warnings);
        let key = ann::IMAGE_CLEANUP_DISK_USAGE_THRESHOLD_PERCENT;
        let disk_usage_threshold_percent = match self.annotations.get(key) {
            None => DEFAULT_DISK_USAGE_THRESHOLD_PERCENT,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n <= 100 && v.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => {
                    return Err(Problem::at(
                        annotation_path(key),
                        format!("must be an integer from 0 to 100, got {v:?}"),
                    ));
                }
            },
        };
        Ok(ImageCleanup {
            on_prep,
            disk_usage_threshold_percent,
        })
    }

    /// Whether the annotation says `Disabled`; any other value keeps the feature on (as in LCA)
    /// but is worth a warning, since it is almost certainly a typo.
    fn annotation_disabled(&self, key: &str, what: &str, warnings: &mut Vec<Problem>) -> bool {
        match self.annotations.get(key).map(String::as_str) {
            Some(ann::DISABLED) => true,
            Some(other) => {
                warnings.push(Problem::at(
                    annotation_path(key),
                    format!(
                        "value {other:?} is not \"Disabled\" (the only value that counts), so \
                         {what} stays enabled"
                    ),
                ));
                false
            }
            None => false,
        }
    }

    fn unknown_annotations(&self, warnings: &mut Vec<Problem>) {
        for key in self.annotations.keys() {
            if ann::KNOWN.contains(&key.as_str()) {
                continue;
            }
            if let Some(best) = closest_annotation(key) {
                warnings.push(Problem::at(
                    annotation_path(key),
                    format!("unknown annotation, ignored; did you mean {best:?}?"),
                ));
            }
        }
    }
}

/// A known annotation that `key` is probably a typo of: same domain and a similar name, or the
/// same name and a similar domain. (Comparing whole keys would match every `lca.openshift.io/`
/// annotation with every other, through the long common prefix.)
fn closest_annotation(key: &str) -> Option<&'static str> {
    let (domain, name) = key.split_once('/')?;
    ann::KNOWN.into_iter().find(|known| {
        let Some((kd, kn)) = known.split_once('/') else {
            return false;
        };
        (kd == domain && closest(name, [kn]).is_some())
            || (kn == name && closest(domain, [kd]).is_some())
    })
}

fn annotation_path(key: &str) -> YamlPath {
    YamlPath::dotted("metadata.annotations").key(key)
}

fn refs_list(
    at: &str,
    refs: &[wire::ConfigMapRef],
    warnings: &mut Vec<Problem>,
) -> Result<Vec<ObjectRef>, Problem> {
    let base = YamlPath::dotted(at);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let p = base.index(i);
        check_object_name(&r.name).map_err(|m| Problem::at(p.key("name"), m))?;
        check_namespace(&r.namespace).map_err(|m| Problem::at(p.key("namespace"), m))?;
        let o = ObjectRef {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
        };
        if !seen.insert(o.clone()) {
            warnings.push(Problem::at(
                p,
                format!("ConfigMap {o} is listed more than once"),
            ));
            continue;
        }
        out.push(o);
    }
    Ok(out)
}
