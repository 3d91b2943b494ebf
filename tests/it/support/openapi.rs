//! `openapi.yaml` as JSON, and validators for the schemas in it (OpenAPI
//! 3.1 schemas are JSON Schema 2020-12): the spec's own test checks the
//! server's answers with them, the notification tests the bodies receivers get.

use std::path::Path;

use serde_json::{Value, json};

/// `openapi.yaml`, parsed.
pub fn spec() -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml"))
        .expect("reading openapi.yaml");
    serde_norway::from_str(&text).expect("openapi.yaml is YAML that maps to JSON")
}

/// One JSON-pointer token.
pub fn esc(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A validator for the schema at `pointer` in the spec, with every `$ref`
/// resolved inside the document (OpenAPI 3.1 schemas are JSON Schema 2020-12).
pub fn validator(spec: &Value, pointer: &str) -> jsonschema::Validator {
    assert!(
        spec.pointer(pointer).is_some(),
        "no schema at {pointer} in openapi.yaml"
    );
    let mut root = spec.clone();
    root.as_object_mut()
        .unwrap()
        // A URI fragment: `{` and `}` (path templates) are percent-encoded.
        .insert(
            "$ref".into(),
            json!(format!(
                "#{}",
                pointer.replace('{', "%7B").replace('}', "%7D")
            )),
        );
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
}

pub fn check(spec: &Value, pointer: &str, instance: &Value, what: &str) {
    let v = validator(spec, pointer);
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not validate against {pointer}:\n{}\n{instance:#}",
        errors.join("\n")
    );
}
