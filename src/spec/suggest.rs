//! Unknown fields, found by walking a document against the JSON Schema of its wire type.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key with "unknown field `stag`,
//! expected one of ..." and no sense of what the user meant. Walking the parsed value against
//! the schema generated from the same wire types (so there is one source of truth) gives the
//! full YAML path, the closest known field (`spec.stag: unknown field; did you mean "stage"?`),
//! and a place for specific hints such as "removed in lca.openshift.io/v1". The caller adds the
//! line and column with [`super::yaml::locate`].

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value};

use super::yaml::{Problem, YamlPath};

/// How close (Jaro-Winkler similarity) a known name must be to be suggested.
const SIMILARITY: f64 = 0.8;

/// The known name closest to `word`, if any is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for k in known {
        if k.to_ascii_lowercase() == lower {
            return Some(k);
        }
        let score = strsim::jaro_winkler(&lower, &k.to_ascii_lowercase());
        if score >= SIMILARITY && best.is_none_or(|(_, s)| score > s) {
            best = Some((k, score));
        }
    }
    best.map(|(k, _)| k)
}

/// A generated schema with `$ref` resolution.
pub struct SchemaDoc {
    root: Json,
}

impl SchemaDoc {
    pub fn new(root: Json) -> SchemaDoc {
        SchemaDoc { root }
    }

    /// Follows local `$ref`s (`#/definitions/X`).
    fn resolve<'a>(&'a self, mut s: &'a Json) -> &'a Json {
        for _ in 0..32 {
            let Some(r) = s.get("$ref").and_then(Json::as_str) else {
                return s;
            };
            let Some(ptr) = r.strip_prefix('#') else {
                return s;
            };
            match self.root.pointer(ptr) {
                Some(t) => s = t,
                None => return s,
            }
        }
        s
    }

    /// The alternative of `s` that describes a mapping (through `$ref`, `anyOf`, `oneOf`,
    /// `allOf`).
    fn object<'a>(&'a self, s: &'a Json) -> Option<&'a Json> {
        self.find(s, &|t| {
            t.get("properties").is_some()
                || t.get("additionalProperties").is_some()
                || t.get("type") == Some(&Json::from("object"))
        })
    }

    /// The alternative of `s` that describes a list.
    fn array<'a>(&'a self, s: &'a Json) -> Option<&'a Json> {
        self.find(s, &|t| t.get("items").is_some())
    }

    fn find<'a>(&'a self, s: &'a Json, pred: &dyn Fn(&Json) -> bool) -> Option<&'a Json> {
        let s = self.resolve(s);
        if pred(s) {
            return Some(s);
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(alts) = s.get(combinator).and_then(Json::as_array) {
                for alt in alts {
                    if let Some(found) = self.find(alt, pred) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// Checks that every key of `value` is known to the schema. `hint` may explain a specific
    /// unknown path (e.g. a field of the other API generation) instead of a suggestion.
    pub fn check_unknown(
        &self,
        value: &Value,
        hint: &dyn Fn(&YamlPath) -> Option<String>,
    ) -> Result<(), Problem> {
        self.walk(value, &self.root, &YamlPath::root(), hint)
    }

    /// [`Self::check_unknown`] for a document whose top level is a mapping.
    pub fn check_unknown_mapping(
        &self,
        value: &Mapping,
        hint: &dyn Fn(&YamlPath) -> Option<String>,
    ) -> Result<(), Problem> {
        self.walk_mapping(value, &self.root, &YamlPath::root(), hint)
    }

    fn walk(
        &self,
        value: &Value,
        schema: &Json,
        path: &YamlPath,
        hint: &dyn Fn(&YamlPath) -> Option<String>,
    ) -> Result<(), Problem> {
        match value {
            Value::Mapping(m) => self.walk_mapping(m, schema, path, hint),
            Value::Sequence(items) => {
                let Some(items_schema) = self.array(schema).and_then(|a| a.get("items")) else {
                    return Ok(());
                };
                for (i, v) in items.iter().enumerate() {
                    self.walk(v, items_schema, &path.index(i), hint)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl SchemaDoc {
    fn walk_mapping(
        &self,
        m: &Mapping,
        schema: &Json,
        path: &YamlPath,
        hint: &dyn Fn(&YamlPath) -> Option<String>,
    ) -> Result<(), Problem> {
        let Some(obj) = self.object(schema) else {
            return Ok(()); // a type mismatch; the typed pass reports it
        };
        let props = obj.get("properties").and_then(Json::as_object);
        let additional = obj.get("additionalProperties");
        for (k, v) in m {
            let Some(k) = k.as_str() else { continue };
            let child_path = path.key(k);
            if let Some(child) = props.and_then(|p| p.get(k)) {
                self.walk(v, child, &child_path, hint)?;
                continue;
            }
            match additional {
                Some(Json::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return Err(unknown_field(&child_path, k, &known, hint));
                }
                Some(s @ Json::Object(_)) => self.walk(v, s, &child_path, hint)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn unknown_field(
    path: &YamlPath,
    key: &str,
    known: &[&str],
    hint: &dyn Fn(&YamlPath) -> Option<String>,
) -> Problem {
    let message = if let Some(h) = hint(path) {
        h
    } else if let Some(best) = closest(key, known.iter().copied()) {
        format!("unknown field; did you mean {best:?}?")
    } else if known.is_empty() {
        "unknown field; no fields are allowed here".to_string()
    } else {
        format!("unknown field; valid fields here: {}", known.join(", "))
    };
    Problem::at(path.clone(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::wire;

    fn doc() -> SchemaDoc {
        SchemaDoc::new(wire::schema_value::<wire::ImageBasedUpgradeV1Alpha1>())
    }

    fn check(yaml: &str) -> Result<(), Problem> {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        doc().check_unknown(&v, &|_| None)
    }

    #[test]
    fn closest_finds_typos_only() {
        let known = [
            "stage",
            "seedImageRef",
            "additionalImages",
            "autoRollbackOnFailure",
        ];
        assert_eq!(closest("stag", known), Some("stage"));
        assert_eq!(closest("Stage", known), Some("stage"));
        assert_eq!(closest("seedImage", known), Some("seedImageRef"));
        assert_eq!(
            closest("autoRollback", known),
            Some("autoRollbackOnFailure")
        );
        assert_eq!(closest("additionalImage", known), Some("additionalImages"));
        assert_eq!(closest("foo", known), None);
        assert_eq!(closest("xyzzy", known), None);
        let fields = ["initMonitorTimeoutSeconds", "disabledInitMonitor"];
        assert_eq!(
            closest("initMonitorTimeout", fields),
            Some("initMonitorTimeoutSeconds")
        );
    }

    #[test]
    fn finds_unknown_fields_with_path_and_suggestion() {
        let e = check("spec:\n  stag: Idle\n").unwrap_err();
        assert_eq!(
            e.render(),
            "spec.stag: unknown field; did you mean \"stage\"?"
        );
        let e = check("spec:\n  oadpContent:\n  - name: a\n    namespce: b\n").unwrap_err();
        assert_eq!(
            e.render(),
            "spec.oadpContent[0].namespce: unknown field; did you mean \"namespace\"?"
        );
        let e = check("spec:\n  seedImageRef:\n    pullSecretRef: {nme: x}\n").unwrap_err();
        assert!(
            e.render()
                .starts_with("spec.seedImageRef.pullSecretRef.nme"),
            "{e:?}"
        );
        let e = check("metadata:\n  labelz: {}\n").unwrap_err();
        assert!(e.render().contains("did you mean \"labels\""), "{e:?}");
    }

    #[test]
    fn lists_valid_fields_when_nothing_is_close() {
        let e = check("spec:\n  qqq: 1\n").unwrap_err();
        assert!(e.message.contains("valid fields here: "), "{e:?}");
        assert!(e.message.contains("seedImageRef"), "{e:?}");
    }

    #[test]
    fn maps_and_free_values_are_not_checked() {
        check("metadata:\n  annotations: {anything/goes: x}\n  managedFields: [{a: 1}]\nstatus: {x: 1}\n")
            .unwrap();
    }

    #[test]
    fn hint_overrides_suggestion() {
        let v: Value = serde_yaml::from_str("spec:\n  stag: x\n").unwrap();
        let e = doc()
            .check_unknown(&v, &|p| Some(format!("hint for {p}")))
            .unwrap_err();
        assert_eq!(e.message, "hint for spec.stag");
    }
}
