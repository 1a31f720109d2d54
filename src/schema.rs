//! JSON Schemas of trustform's documents, each with an `$id` that names the document and
//! its format version (`https://trustform.dev/schemas/plan-v1.schema.json`).

/// `schema` as pretty JSON, with the `$id` of `what` at `version`.
pub fn versioned(schema: schemars::Schema, what: &str, version: u32) -> String {
    let mut v = serde_json::to_value(&schema).expect("schema serialises");
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "$id".into(),
            format!("https://trustform.dev/schemas/{what}-v{version}.schema.json").into(),
        );
    }
    serde_json::to_string_pretty(&v).expect("schema serialises") + "\n"
}
