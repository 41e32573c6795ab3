//! Typed records: a serde type that names its topic, key field, schema and format, and
//! the serialisation of its values into validated, id-tagged record values.
//!
//! ```
//! use qwire::schema::{SchemaFormat, SchemaRecord, SchemaSource};
//!
//! #[derive(serde::Serialize, SchemaRecord)]
//! #[qwire(topic = "orders", key = "id", format = "json",
//!         schema = r#"{"type": "object", "properties": {"id": {"type": "string"},
//!                     "qty": {"type": "integer", "minimum": 1}}, "required": ["id", "qty"]}"#)]
//! struct Order {
//!     id: String,
//!     qty: u32,
//! }
//!
//! assert_eq!(Order::TOPIC, "orders");
//! assert_eq!(Order::subject(), "orders-value");
//! assert_eq!(Order::FORMAT, SchemaFormat::Json);
//! let o = Order { id: "o-1".into(), qty: 2 };
//! assert_eq!(o.key().as_deref(), Some(&b"o-1"[..]));
//! assert!(matches!(Order::schema(), SchemaSource::Text(_)));
//! ```
//!
//! The derive takes `topic` (required), `format` (`json`, `avro` or `protobuf`; default
//! `json`), the schema as `schema = "text"`, `schema_file = "path"` (read at compile time,
//! relative to the crate's `Cargo.toml`) or `subject_schema` (use what is registered under
//! the subject), optionally `key = "field"`, `subject = "name"` (default `{topic}-value`)
//! and `message = "pkg.Message"` (Protobuf: which message; default the first).

use std::sync::Arc;

pub use bytes::Bytes;
use serde::Serialize;
use serde_json::Value as Json;

use super::error::ValidationError;
use super::parsed::ParsedSchema;
use super::wire::{encode_confluent, header_value, IdPlacement, SCHEMA_ID_HEADER};
use super::SchemaType;
use crate::protocol::Header;

/// How a typed record's value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFormat {
    /// UTF-8 JSON checked against a JSON Schema.
    Json,
    /// An Avro binary datum.
    Avro,
    /// A Protobuf message.
    Protobuf,
}

impl SchemaFormat {
    /// The registry's schema type for this format.
    pub fn schema_type(self) -> SchemaType {
        match self {
            SchemaFormat::Json => SchemaType::Json,
            SchemaFormat::Avro => SchemaType::Avro,
            SchemaFormat::Protobuf => SchemaType::Protobuf,
        }
    }
}

/// Where a typed record's schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaSource {
    /// This schema text: registered under the subject (or found there) on first use.
    Text(&'static str),
    /// Whatever the subject's latest version is (registered by someone else).
    Registered,
}

/// A serde type produced with a schema: what `producer.typed::<T>()` sends.
pub trait SchemaRecord: Serialize {
    /// The topic records go to.
    const TOPIC: &'static str;
    /// The value format.
    const FORMAT: SchemaFormat;

    /// Where the schema comes from.
    fn schema() -> SchemaSource;

    /// The subject the schema is registered under; `{TOPIC}-value` by default.
    fn subject() -> String {
        format!("{}-value", Self::TOPIC)
    }

    /// For Protobuf, the message type values are encoded as (full name, or relative to the
    /// package); `None` for the first message in the file.
    fn message_name() -> Option<&'static str> {
        None
    }

    /// The record key: the key field's value (see [`key_bytes`]), or `None`.
    fn key(&self) -> Option<Bytes>;
}

/// A key field's bytes: a string's UTF-8 bytes, anything else its JSON text (so `42` is
/// the key `"42"`, as a string key "42" would be).
pub fn key_bytes<K: Serialize + ?Sized>(key: &K) -> Bytes {
    match serde_json::to_value(key) {
        Ok(Json::String(s)) => Bytes::from(s),
        Ok(Json::Null) | Err(_) => Bytes::new(),
        Ok(other) => Bytes::from(other.to_string()),
    }
}

/// A record value ready to send: the bytes and, with [`IdPlacement::Header`], the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedValue {
    /// The record value.
    pub value: Bytes,
    /// The schema id header, when the id travels as a header.
    pub header: Option<Header>,
}

/// A schema resolved to its registry id, with how values are encoded for it.
#[derive(Debug, Clone)]
pub struct SchemaBinding {
    id: u32,
    parsed: Arc<ParsedSchema>,
    placement: IdPlacement,
    message: Option<prost_reflect::MessageDescriptor>,
    /// The id header's value, built once.
    id_bytes: Bytes,
}

impl SchemaBinding {
    /// Binds schema `id` (parsed as `parsed`). `message` picks the Protobuf message
    /// (`None`: the first); an unknown name is an error.
    pub fn new(
        id: u32,
        parsed: Arc<ParsedSchema>,
        placement: IdPlacement,
        message: Option<&str>,
    ) -> Result<Self, String> {
        let message = match (&*parsed, message) {
            (ParsedSchema::Protobuf(p), Some(name)) => {
                Some(p.message(name).ok_or_else(|| format!("the schema defines no message '{name}'"))?)
            }
            (ParsedSchema::Protobuf(p), None) => Some(p.root()),
            (_, Some(name)) => return Err(format!("a message name ('{name}') only applies to Protobuf schemas")),
            (_, None) => None,
        };
        Ok(SchemaBinding { id, parsed, placement, message, id_bytes: Bytes::copy_from_slice(&header_value(id)) })
    }

    /// The schema id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The parsed schema.
    pub fn parsed(&self) -> &Arc<ParsedSchema> {
        &self.parsed
    }

    /// Where the id goes.
    pub fn placement(&self) -> IdPlacement {
        self.placement
    }

    fn header(&self) -> Header {
        Header { key: SCHEMA_ID_HEADER.to_owned(), value: Some(self.id_bytes.clone()) }
    }

    fn frame(&self, payload: Vec<u8>) -> EncodedValue {
        match self.placement {
            IdPlacement::Header => EncodedValue { value: Bytes::from(payload), header: Some(self.header()) },
            IdPlacement::Confluent => {
                let index = match (&*self.parsed, &self.message) {
                    (ParsedSchema::Protobuf(p), Some(m)) => Some(p.message_index(m)),
                    _ => None,
                };
                EncodedValue { value: Bytes::from(encode_confluent(self.id, index.as_deref(), &payload)), header: None }
            }
        }
    }

    /// Validates a value given as JSON and encodes it in the schema's format.
    pub fn encode_json(&self, value: &Json) -> Result<EncodedValue, ValidationError> {
        let payload = match (&*self.parsed, &self.message) {
            (ParsedSchema::Protobuf(p), Some(m)) => p.encode_json(m, value)?,
            (parsed, _) => parsed.encode_json(value)?,
        };
        Ok(self.frame(payload))
    }

    /// Validates and encodes a serde value.
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<EncodedValue, ValidationError> {
        let json = serde_json::to_value(value).map_err(|e| ValidationError::new("", "serialize", e.to_string()))?;
        self.encode_json(&json)
    }

    /// Checks a value already in the schema's format (JSON text, an Avro datum, Protobuf
    /// bytes of the bound message) and frames it with the id.
    pub fn check_payload(&self, payload: &[u8]) -> Result<EncodedValue, ValidationError> {
        self.check(payload)?;
        Ok(self.frame(payload.to_vec()))
    }

    /// [`SchemaBinding::check_payload`] for a value already in a `Bytes`: with the id in a
    /// header, the value is kept as it is (no copy).
    pub fn check_bytes(&self, payload: Bytes) -> Result<EncodedValue, ValidationError> {
        self.check(&payload)?;
        Ok(match self.placement {
            IdPlacement::Header => EncodedValue { value: payload, header: Some(self.header()) },
            IdPlacement::Confluent => self.frame(payload.to_vec()),
        })
    }

    fn check(&self, payload: &[u8]) -> Result<(), ValidationError> {
        let index = match (&*self.parsed, &self.message) {
            (ParsedSchema::Protobuf(p), Some(m)) => p.message_index(m),
            _ => Vec::new(),
        };
        self.parsed.validate_payload(payload, &index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::wire::{get_message_index, split_confluent};
    use serde_json::json;

    fn bind(t: SchemaType, text: &str, placement: IdPlacement, message: Option<&str>) -> SchemaBinding {
        SchemaBinding::new(9, Arc::new(ParsedSchema::parse(t, text).unwrap()), placement, message).unwrap()
    }

    #[derive(Serialize)]
    struct Order {
        id: u64,
        sku: String,
    }

    #[test]
    fn json_values_get_a_header_or_a_confluent_prefix() {
        let schema = r#"{"type": "object", "properties": {"id": {"type": "integer"}, "sku": {"type": "string", "minLength": 1}}}"#;
        let b = bind(SchemaType::Json, schema, IdPlacement::Header, None);
        let e = b.encode(&Order { id: 1, sku: "a".into() }).unwrap();
        assert_eq!(&e.value[..], br#"{"id":1,"sku":"a"}"#);
        let h = e.header.unwrap();
        assert_eq!((h.key.as_str(), &h.value.unwrap()[..]), (SCHEMA_ID_HEADER, &[0, 0, 0, 9][..]));
        let err = b.encode(&Order { id: 1, sku: String::new() }).unwrap_err();
        assert_eq!((err.path.as_str(), err.rule.as_str()), ("/sku", "minLength"));
        let c = bind(SchemaType::Json, schema, IdPlacement::Confluent, None);
        let e = c.encode(&Order { id: 1, sku: "a".into() }).unwrap();
        assert_eq!(&e.value[..5], &[0, 0, 0, 0, 9]);
        assert!(e.header.is_none());
        assert!(c.check_payload(br#"{"id": "x"}"#).is_err());
        assert_eq!(&c.check_payload(br#"{"id": 2}"#).unwrap().value[5..], br#"{"id": 2}"#);
    }

    #[test]
    fn avro_and_protobuf_values_are_encoded_with_the_schema() {
        let avro = r#"{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}, {"name": "sku", "type": "string"}]}"#;
        let b = bind(SchemaType::Avro, avro, IdPlacement::Confluent, None);
        let e = b.encode(&Order { id: 1, sku: "a".into() }).unwrap();
        assert_eq!(&e.value[..], &[0, 0, 0, 0, 9, 2, 2, b'a']);
        assert!(b.check_payload(&[2, 2, b'a']).is_ok());
        assert!(b.check_payload(&[2, 9]).is_err());

        let proto =
            "syntax = \"proto3\"; message Other { int32 x = 1; } message Order { uint64 id = 1; string sku = 2; }";
        let p = bind(SchemaType::Protobuf, proto, IdPlacement::Confluent, Some("Order"));
        let e = p.encode(&Order { id: 1, sku: "a".into() }).unwrap();
        let (id, rest) = split_confluent(&e.value).unwrap();
        assert_eq!(id, 9);
        let (index, used) = get_message_index(rest).unwrap();
        assert_eq!(index, vec![1]);
        assert_eq!(&rest[used..], &[0x08, 1, 0x12, 1, b'a']);
        assert!(SchemaBinding::new(1, p.parsed().clone(), IdPlacement::Header, Some("Nope")).is_err());
        let err = p.encode_json(&json!({"id": 1, "colour": "red"})).unwrap_err();
        assert_eq!(err.rule, "unknown_field");
    }

    #[test]
    fn keys_are_strings_or_json_text() {
        assert_eq!(key_bytes("k"), Bytes::from_static(b"k"));
        assert_eq!(key_bytes(&42u32), Bytes::from_static(b"42"));
        assert_eq!(key_bytes(&None::<u8>), Bytes::new());
    }
}
