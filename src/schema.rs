//! JSON Schemas. STUB on main until the spec work lands.
pub fn desired_schema() -> serde_json::Value {
    serde_json::Value::Null
}
pub fn status_schema() -> serde_json::Value {
    serde_json::Value::Null
}
