//! A topic's schema policy, checked by the broker on produce.
//!
//! - `none` (default): records are stored as they come;
//! - `warn`: records without a schema id registered under the topic's subject
//!   (`{topic}-value`) are stored, logged and counted;
//! - `enforce`: such records are refused (`SCHEMA_REQUIRED`, 48); with payload validation
//!   on, a value that does not match its schema is refused too (`INVALID_RECORD`, 49).
//!
//! A record's schema id is read from the `qwire.schema_id` header, else from a Confluent
//! wire-format prefix (magic byte 0 and a 4-byte id).

use crate::protocol::schema::codes;
use crate::protocol::Header;

use super::parsed::ParsedSchema;
use super::registry::Registry;
pub use super::types::SchemaPolicy;
use super::wire::{get_message_index, id_from_header, split_confluent, SCHEMA_ID_HEADER};

/// Why a record fails its topic's schema check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRefusal {
    /// `SCHEMA_REQUIRED` (48) or `INVALID_RECORD` (49).
    pub code: u16,
    /// Detail naming the record's problem.
    pub message: String,
}

/// Where a record says its schema id is, and the payload after any Confluent prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSchemaId<'a> {
    /// The schema id.
    pub id: u32,
    /// The value without the Confluent prefix (for Protobuf, the message index is still
    /// in front: see [`get_message_index`]).
    pub payload: &'a [u8],
    /// The id came from a Confluent prefix (not a header).
    pub confluent: bool,
}

/// The schema id a record carries: the `qwire.schema_id` header, else a Confluent prefix.
pub fn record_schema_id<'a>(headers: &[Header], value: Option<&'a [u8]>) -> Option<RecordSchemaId<'a>> {
    if let Some(h) = headers.iter().find(|h| h.key == SCHEMA_ID_HEADER) {
        let id = id_from_header(h.value.as_deref()?).ok()?;
        return Some(RecordSchemaId { id, payload: value.unwrap_or_default(), confluent: false });
    }
    let (id, payload) = split_confluent(value?).ok()?;
    Some(RecordSchemaId { id, payload, confluent: true })
}

/// The subject a topic's values are registered under.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// Checks one record of `topic`: it must carry a schema id registered under the topic's
/// subject; with `validate_payload`, its value must also decode / validate with that schema.
pub async fn check_record(
    registry: &Registry,
    topic: &str,
    headers: &[Header],
    value: Option<&[u8]>,
    validate_payload: bool,
) -> Result<(), RecordRefusal> {
    let subject = value_subject(topic);
    let refuse = |message: String| Err(RecordRefusal { code: codes::SCHEMA_REQUIRED, message });
    let Some(found) = record_schema_id(headers, value) else {
        return refuse(format!(
            "a record of topic '{topic}' carries no schema id (header {SCHEMA_ID_HEADER} or the Confluent wire format)"
        ));
    };
    match registry.subject_has_id(&subject, found.id).await {
        Ok(true) => {}
        Ok(false) => return refuse(format!("schema id {} is not registered under subject '{subject}'", found.id)),
        Err(e) => return refuse(format!("schema registry unavailable: {e}")),
    }
    if !validate_payload {
        return Ok(());
    }
    let invalid = |message: String| Err(RecordRefusal { code: codes::INVALID_RECORD, message });
    let parsed = match registry.schema(found.id).await.map(|s| s.parsed) {
        Ok(Some(p)) => p,
        _ => return invalid(format!("schema id {} cannot be loaded", found.id)),
    };
    let (index, payload) = match (&*parsed, found.confluent) {
        (ParsedSchema::Protobuf(_), true) => match get_message_index(found.payload) {
            Ok((index, used)) => (index, &found.payload[used..]),
            Err(e) => return invalid(e.to_string()),
        },
        _ => (Vec::new(), found.payload),
    };
    parsed
        .validate_payload(payload, &index)
        .or_else(|e| invalid(format!("record value does not match schema {}: {e}", found.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::registry::SchemaInput;
    use crate::schema::wire::encode_confluent;
    use crate::schema::SchemaType;
    use bytes::Bytes;

    #[test]
    fn records_need_an_id_registered_under_the_topic_subject() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = Registry::in_memory().await;
            let schema = r#"{"type": "object", "required": ["n"]}"#;
            let (id, _) = r
                .register("t-value", &SchemaInput { schema_type: SchemaType::Json, schema: schema.into() })
                .await
                .unwrap();
            let (other, _) = r
                .register("u-value", &SchemaInput { schema_type: SchemaType::Json, schema: "{}".into() })
                .await
                .unwrap();
            let header = |id: u32| {
                vec![Header { key: SCHEMA_ID_HEADER.into(), value: Some(Bytes::copy_from_slice(&id.to_be_bytes())) }]
            };
            check_record(&r, "t", &header(id), Some(br#"{"n": 1}"#), true).await.unwrap();
            let e = check_record(&r, "t", &[], Some(br#"{"n": 1}"#), false).await.unwrap_err();
            assert_eq!(e.code, codes::SCHEMA_REQUIRED);
            let e = check_record(&r, "t", &header(other), Some(b"{}"), false).await.unwrap_err();
            assert_eq!(e.code, codes::SCHEMA_REQUIRED);
            assert!(e.message.contains("t-value"), "{}", e.message);
            // Payload validation is separate and optional.
            check_record(&r, "t", &header(id), Some(b"{}"), false).await.unwrap();
            let e = check_record(&r, "t", &header(id), Some(b"{}"), true).await.unwrap_err();
            assert_eq!(e.code, codes::INVALID_RECORD);
            // The Confluent wire format carries the id in the value.
            let framed = encode_confluent(id, None, br#"{"n": 2}"#);
            check_record(&r, "t", &[], Some(&framed), true).await.unwrap();
            assert_eq!(record_schema_id(&[], Some(&framed)).unwrap().payload, br#"{"n": 2}"#);
        });
        assert_eq!("ENFORCE".parse::<SchemaPolicy>().unwrap(), SchemaPolicy::Enforce);
        assert_eq!(SchemaPolicy::from_u8(SchemaPolicy::Warn.as_u8()), Some(SchemaPolicy::Warn));
        assert!("strict".parse::<SchemaPolicy>().is_err());
    }
}
