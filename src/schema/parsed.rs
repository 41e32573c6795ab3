//! A schema of any type, parsed once and used to validate, encode and decode values.

use serde_json::Value as Json;

use super::avro::AvroSchema;
use super::error::{InvalidSchema, ValidationError};
use super::json::{canonical, JsonSchema};
use super::protobuf::ProtobufSchema;
use super::SchemaType;

/// A parsed schema: JSON Schema, Avro or Protobuf.
#[derive(Debug)]
pub enum ParsedSchema {
    /// JSON Schema.
    Json(JsonSchema),
    /// Avro.
    Avro(AvroSchema),
    /// Protobuf (the first top-level message is the one values are checked against).
    Protobuf(ProtobufSchema),
}

impl ParsedSchema {
    /// Parses `text` as a schema of `schema_type`.
    pub fn parse(schema_type: SchemaType, text: &str) -> Result<ParsedSchema, InvalidSchema> {
        Ok(match schema_type {
            SchemaType::Json => ParsedSchema::Json(JsonSchema::parse(text)?),
            SchemaType::Avro => ParsedSchema::Avro(AvroSchema::parse(text)?),
            SchemaType::Protobuf => ParsedSchema::Protobuf(ProtobufSchema::parse(text)?),
        })
    }

    /// The schema's type.
    pub fn schema_type(&self) -> SchemaType {
        match self {
            ParsedSchema::Json(_) => SchemaType::Json,
            ParsedSchema::Avro(_) => SchemaType::Avro,
            ParsedSchema::Protobuf(_) => SchemaType::Protobuf,
        }
    }

    /// A form of the text that is equal for two texts describing the same schema (key
    /// order, whitespace and comments do not matter). The registry gives one id per
    /// distinct canonical form and type.
    pub fn canonical(&self) -> String {
        match self {
            ParsedSchema::Json(j) => canonical(j.document()),
            ParsedSchema::Avro(a) => a.canonical().to_owned(),
            ParsedSchema::Protobuf(p) => p.canonical().to_owned(),
        }
    }

    /// Checks a value given as JSON against the schema (the default message for Protobuf).
    pub fn validate_json(&self, value: &Json) -> Result<(), ValidationError> {
        match self {
            ParsedSchema::Json(j) => j.validate(value),
            ParsedSchema::Avro(a) => a.from_json(value).map(drop),
            ParsedSchema::Protobuf(p) => p.from_json(&p.root(), value).map(drop),
        }
    }

    /// Validates a value given as JSON and encodes it in the schema's format: UTF-8 JSON,
    /// an Avro binary datum, or Protobuf bytes of the default message. The Confluent
    /// framing (magic byte, id, message index) is not included: see [`super::wire`].
    pub fn encode_json(&self, value: &Json) -> Result<Vec<u8>, ValidationError> {
        match self {
            ParsedSchema::Json(j) => {
                j.validate(value)?;
                Ok(serde_json::to_vec(value).expect("a JSON value serialises"))
            }
            ParsedSchema::Avro(a) => a.encode_json(value),
            ParsedSchema::Protobuf(p) => p.encode_json(&p.root(), value),
        }
    }

    /// Checks an already encoded payload: JSON text is parsed and validated; Avro and
    /// Protobuf bytes must decode with the schema (Protobuf: as the message `index` names,
    /// the default message when empty).
    pub fn validate_payload(&self, payload: &[u8], index: &[i32]) -> Result<(), ValidationError> {
        match self {
            ParsedSchema::Json(j) => {
                let v: Json = serde_json::from_slice(payload)
                    .map_err(|e| ValidationError::new("", "json", format!("not JSON: {e}")))?;
                j.validate(&v)
            }
            _ => self.decode_to_json(payload, index).map(drop).map_err(|e| ValidationError::new("", "decode", e)),
        }
    }

    /// Decodes a payload (without Confluent framing) into JSON for display. `index` is the
    /// Protobuf message index (empty for the default message); other types ignore it.
    pub fn decode_to_json(&self, payload: &[u8], index: &[i32]) -> Result<Json, String> {
        match self {
            ParsedSchema::Json(_) => serde_json::from_slice(payload).map_err(|e| e.to_string()),
            ParsedSchema::Avro(a) => a.decode_to_json(payload),
            ParsedSchema::Protobuf(p) => {
                let desc = if index.is_empty() {
                    p.root()
                } else {
                    p.message_at(index).ok_or_else(|| format!("no message at index {index:?}"))?
                };
                p.decode_to_json(&desc, payload)
            }
        }
    }
}
