//! What can be wrong with a schema or with a value checked against one.

use std::fmt;

/// A value does not match its schema. Names where (`path`, a JSON pointer into the value;
/// empty for the value itself) and which rule failed (`rule`: a JSON Schema keyword such as
/// `required` or `minimum`, an Avro or Protobuf rule such as `type` or `unknown_field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// JSON pointer to the offending part of the value (`/items/0/price`); `""` is the root.
    pub path: String,
    /// The rule that failed.
    pub rule: String,
    /// A human-readable explanation.
    pub message: String,
}

impl ValidationError {
    /// A validation error at `path` for `rule`.
    pub fn new(path: impl Into<String>, rule: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { path: path.into(), rule: rule.into(), message: message.into() }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "invalid value at {path} (rule '{}'): {}", self.rule, self.message)
    }
}

/// A schema text that cannot be used: it does not parse, is not a valid schema of its
/// type, or uses something this registry does not support. Confluent's REST API answers
/// it with `42201`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {schema_type} schema: {reason}")]
pub struct InvalidSchema {
    /// The type the text was parsed as.
    pub schema_type: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl InvalidSchema {
    pub(crate) fn new(schema_type: super::SchemaType, reason: impl Into<String>) -> Self {
        InvalidSchema { schema_type: schema_type.as_str(), reason: reason.into() }
    }
}

/// Escapes one JSON-pointer segment (RFC 6901: `~` → `~0`, `/` → `~1`).
pub(crate) fn pointer_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// `path` with `segment` appended as a JSON-pointer segment.
pub(crate) fn join_pointer(path: &str, segment: &str) -> String {
    format!("{path}/{}", pointer_segment(segment))
}
