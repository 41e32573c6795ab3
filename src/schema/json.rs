//! JSON Schema: parsing (drafts 7 and 2020-12 tested; 4, 6 and 2019-09 accepted through
//! `$schema`), validation with the `jsonschema` crate, and the canonical text used to
//! recognise the same schema registered twice.

use serde_json::Value;

use super::error::{InvalidSchema, ValidationError};
use super::SchemaType;

/// A parsed JSON Schema and its compiled validator.
pub struct JsonSchema {
    document: Value,
    draft: jsonschema::Draft,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchema").field("draft", &self.draft).field("document", &self.document).finish()
    }
}

/// The draft named by `$schema`; draft 7 when absent (Confluent's default).
fn draft_of(document: &Value) -> Result<jsonschema::Draft, InvalidSchema> {
    use jsonschema::Draft;
    let Some(uri) = document.get("$schema") else { return Ok(Draft::Draft7) };
    let uri = uri.as_str().ok_or_else(|| InvalidSchema::new(SchemaType::Json, "$schema must be a string"))?;
    Ok(if uri.contains("2020-12") {
        Draft::Draft202012
    } else if uri.contains("2019-09") {
        Draft::Draft201909
    } else if uri.contains("draft-07") {
        Draft::Draft7
    } else if uri.contains("draft-06") {
        Draft::Draft6
    } else if uri.contains("draft-04") {
        Draft::Draft4
    } else {
        return Err(InvalidSchema::new(SchemaType::Json, format!("unsupported $schema '{uri}'")));
    })
}

impl JsonSchema {
    /// Parses and compiles a schema. The document must be an object or a boolean, valid
    /// against its draft's meta-schema, and may only use local `$ref`s (nothing is fetched).
    pub fn parse(text: &str) -> Result<JsonSchema, InvalidSchema> {
        let document: Value =
            serde_json::from_str(text).map_err(|e| InvalidSchema::new(SchemaType::Json, format!("not JSON: {e}")))?;
        if !(document.is_object() || document.is_boolean()) {
            return Err(InvalidSchema::new(SchemaType::Json, "a schema must be a JSON object or a boolean"));
        }
        let draft = draft_of(&document)?;
        let validator = jsonschema::options()
            .with_draft(draft)
            .build(&document)
            .map_err(|e| InvalidSchema::new(SchemaType::Json, e.to_string()))?;
        Ok(JsonSchema { document, draft, validator })
    }

    /// The schema document.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Whether the document is draft 2020-12 (tuple forms are `prefixItems`) rather than
    /// an earlier draft (tuple forms are an `items` array).
    pub fn is_2020_12(&self) -> bool {
        self.draft == jsonschema::Draft::Draft202012
    }

    /// Checks `value`; the error names the first failure's path and keyword.
    pub fn validate(&self, value: &Value) -> Result<(), ValidationError> {
        // The boolean check is the validator's fast path; details only for a failure.
        if self.validator.is_valid(value) {
            return Ok(());
        }
        match self.validator.iter_errors(value).next() {
            None => Ok(()),
            Some(e) => Err(ValidationError::new(
                e.instance_path().to_string(),
                e.kind().keyword().to_string(),
                e.masked_with("value").to_string(),
            )),
        }
    }
}

/// Serialises `value` with object keys sorted at every level and no whitespace: two texts
/// that differ only in key order or layout get the same canonical form.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORDER: &str = r#"{
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "items": {"type": "array", "items": {"type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"]}}
        },
        "required": ["id"]
    }"#;

    #[test]
    fn validates_and_names_path_and_rule() {
        let s = JsonSchema::parse(ORDER).unwrap();
        assert!(!s.is_2020_12());
        s.validate(&json!({"id": 3, "items": [{"sku": "a", "qty": 1}]})).unwrap();
        let e = s.validate(&json!({"id": 3, "items": [{"sku": "a", "qty": 0}]})).unwrap_err();
        assert_eq!(e.path, "/items/0/qty");
        assert_eq!(e.rule, "minimum");
        let e = s.validate(&json!({"items": []})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("", "required"));
        assert!(e.to_string().contains("rule 'required'"), "{e}");
        let e = s.validate(&json!({"id": "x"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/id", "type"));
    }

    #[test]
    fn draft_2020_12_keywords_apply() {
        let s = JsonSchema::parse(
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}"#,
        )
        .unwrap();
        assert!(s.is_2020_12());
        s.validate(&json!(["a", 1])).unwrap();
        // `items: false` fails as a false schema at the extra item.
        let e = s.validate(&json!(["a", 1, 2])).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/2", "falseSchema"));
        assert_eq!(s.validate(&json!([1])).unwrap_err().path, "/0");
    }

    #[test]
    fn bad_schemas_are_refused_with_a_reason() {
        for bad in ["not json", "[1,2]", r#"{"type": "strin"}"#, r#"{"$schema": "http://example.com/x"}"#] {
            let e = JsonSchema::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
        // A remote reference is never fetched.
        assert!(JsonSchema::parse(r#"{"$ref": "https://example.com/other.json"}"#).is_err());
    }

    #[test]
    fn canonical_form_ignores_layout_and_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": [1, {"y": 1, "x": 2}], "a": "s"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "a":"s","b":[1,{"x":2,"y":1}] }"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":"s","b":[1,{"x":2,"y":1}]}"#);
    }
}
