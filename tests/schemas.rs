//! The checked-in schemas in `schemas/` must equal the generated ones.
//! Refresh them with `IBU_UPDATE_SCHEMAS=1 cargo test --test schemas`.

use std::path::Path;

fn check(file: &str, schema: serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    let want = ibu::schema::render(&schema);
    if std::env::var_os("IBU_UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale (the Rust types changed); refresh it with: IBU_UPDATE_SCHEMAS=1 cargo test --test schemas",
        path.display()
    );
}

#[test]
fn imagebasedupgrade_schema_is_current() {
    check(
        "imagebasedupgrade.schema.json",
        ibu::schema::desired_schema(),
    );
}

#[test]
fn status_schema_is_current() {
    check("status.schema.json", ibu::schema::status_schema());
}

#[test]
fn schemas_are_draft_07() {
    for s in [ibu::schema::desired_schema(), ibu::schema::status_schema()] {
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    }
}
