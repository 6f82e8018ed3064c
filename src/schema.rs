//! JSON Schemas of ibu's documents, for editors and for tools that read ibu's status.
//!
//! Both are generated from the Rust types that read and write the documents (the wire types of
//! [`crate::spec::wire`] and [`crate::status::Status`]), so the schema cannot drift from what
//! ibu accepts. They use JSON Schema draft-07, which yaml-language-server (VS Code, Neovim, ...)
//! handles best. Checked-in copies live in `schemas/`; `tests/schemas.rs` fails when they are
//! stale and `IBU_UPDATE_SCHEMAS=1 cargo test --test schemas` rewrites them.
//!
//! To get completion and validation while editing `/etc/ibu/upgrade.yaml`, start the file with
//! `# yaml-language-server: $schema=<path or URL of imagebasedupgrade.schema.json>`.

use schemars::JsonSchema;

use crate::spec::wire::{self, ImageBasedUpgradeV1, ImageBasedUpgradeV1Alpha1};
use crate::status::Status;

/// An ImageBasedUpgrade of either API generation; `apiVersion` tells them apart.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(title = "ImageBasedUpgrade")]
#[allow(dead_code)] // only its schema is used
enum AnyImageBasedUpgrade {
    V1(ImageBasedUpgradeV1),
    V1Alpha1(ImageBasedUpgradeV1Alpha1),
}

/// Schema of the desired-state document (`/etc/ibu/upgrade.yaml`): an `anyOf` of the two API
/// generations, each with its `apiVersion` constant.
pub fn desired_schema() -> serde_json::Value {
    wire::schema_value::<AnyImageBasedUpgrade>()
}

/// Schema of ibu's status (LCA's `ImageBasedUpgrade.status` plus ibu's `checks` and `lastStep`).
pub fn status_schema() -> serde_json::Value {
    wire::schema_value::<Status>()
}

/// A schema as checked in: pretty-printed JSON with a trailing newline.
pub fn render(schema: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_schema_accepts_either_generation() {
        let s = desired_schema();
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
        let text = s.to_string();
        assert!(text.contains("anyOf"), "{text}");
        assert!(text.contains("lca.openshift.io/v1alpha1"));
        assert!(text.contains("\"lca.openshift.io/v1\""));
        assert!(text.contains("initMonitorTimeoutSeconds"));
    }

    #[test]
    fn status_schema_has_conditions() {
        let text = status_schema().to_string();
        assert!(text.contains("validNextStages"), "{text}");
        assert!(text.contains("PrepCompleted"), "{text}");
    }
}
