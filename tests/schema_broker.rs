//! The schema registry hosted by a real broker: the protocol frames over QUIC + mTLS,
//! subjects in the ACL, topic schema policies (none / warn / enforce) on produce, and
//! recovery after a restart.

mod common;

use bytes::Bytes;
use common::TestBroker;
use qwire::protocol::{Acks, BatchBuilder, Compression, ErrorCode, Header, ProducerStamp, Record};
use qwire::schema::wire::{encode_confluent, header_value, SCHEMA_ID_HEADER};
use qwire::schema::{Compatibility, SchemaPolicy, SchemaType};
use qwire::transport::TransportError;

const ORDER: &str = r#"{"type": "object", "properties": {"id": {"type": "integer"}, "qty": {"type": "integer", "minimum": 1}}, "required": ["id"]}"#;
const ORDER_V2: &str = r#"{"type": "object", "properties": {"id": {"type": "integer"}, "qty": {"type": ["integer", "null"], "minimum": 1}}, "required": ["id"]}"#;
const ORDER_BAD: &str = r#"{"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}"#;

fn code(e: TransportError) -> ErrorCode {
    match e {
        TransportError::Broker { code, .. } => code,
        other => panic!("expected a broker error, got {other}"),
    }
}

/// One batch of records with the given (header id, value) pairs.
fn batch(records: &[(Option<u32>, &[u8])]) -> Bytes {
    let mut b = BatchBuilder::new();
    for (i, (id, value)) in records.iter().enumerate() {
        let headers = id
            .map(|id| {
                vec![Header { key: SCHEMA_ID_HEADER.into(), value: Some(Bytes::copy_from_slice(&header_value(id))) }]
            })
            .unwrap_or_default();
        b.push(&Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers,
        });
    }
    b.seal(Compression::Lz4, None, ProducerStamp::NONE)
}

#[tokio::test]
async fn registry_frames_and_restart_recovery() {
    let mut b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    assert_eq!(c.register_schema("orders-value", SchemaType::Json, ORDER).await.unwrap(), (1, 1));
    // The same schema again (different layout): same id, no new version.
    let relaid = ORDER.replace(' ', "");
    assert_eq!(c.register_schema("orders-value", SchemaType::Json, &relaid).await.unwrap(), (1, 1));
    assert_eq!(c.register_schema("copies-value", SchemaType::Json, ORDER).await.unwrap(), (1, 1));
    assert_eq!(
        code(c.register_schema("orders-value", SchemaType::Json, ORDER_BAD).await.unwrap_err()),
        ErrorCode::IncompatibleSchema
    );
    assert_eq!(
        code(c.register_schema("orders-value", SchemaType::Json, "{").await.unwrap_err()),
        ErrorCode::InvalidSchema
    );
    let (ok, problems) = c.check_schema("orders-value", None, SchemaType::Json, ORDER_BAD).await.unwrap();
    assert!(!ok && problems[0].contains("TYPE_CHANGED"), "{problems:?}");
    assert_eq!(c.register_schema("orders-value", SchemaType::Json, ORDER_V2).await.unwrap(), (2, 2));
    assert_eq!(c.schema_versions("orders-value", false).await.unwrap(), vec![1, 2]);
    assert_eq!(c.schema_subjects(false).await.unwrap(), vec!["copies-value", "orders-value"]);
    let latest = c.schema_version("orders-value", None, false).await.unwrap();
    assert_eq!((latest.id, latest.version, latest.schema.as_str()), (2, 2, ORDER_V2));
    assert_eq!(c.schema_by_id(1).await.unwrap(), (SchemaType::Json, ORDER.to_owned()));
    assert_eq!(code(c.schema_by_id(77).await.unwrap_err()), ErrorCode::SchemaNotFound);
    assert_eq!(code(c.schema_version("nope", None, false).await.unwrap_err()), ErrorCode::SchemaSubjectNotFound);
    assert_eq!(c.lookup_schema("copies-value", SchemaType::Json, ORDER, false).await.unwrap().version, 1);
    assert_eq!(c.set_schema_compatibility(Some("orders-value"), Some(Compatibility::Full)).await.unwrap(), None);
    assert_eq!(c.schema_compatibility(Some("orders-value"), false).await.unwrap(), Compatibility::Full);
    assert_eq!(c.schema_compatibility(None, false).await.unwrap(), Compatibility::Backward);
    assert_eq!(code(c.delete_schema("copies-value", None, true).await.unwrap_err()), ErrorCode::SchemaDeleteRefused);
    assert_eq!(c.delete_schema("copies-value", None, false).await.unwrap(), vec![1]);
    c.create_topic("orders", 1).await.unwrap();
    assert_eq!(
        c.set_topic_schema_policy("orders", SchemaPolicy::Enforce, true).await.unwrap(),
        (SchemaPolicy::Enforce, true)
    );
    assert_eq!(
        code(c.set_topic_schema_policy("ghost", SchemaPolicy::Warn, false).await.unwrap_err()),
        ErrorCode::UnknownTopicOrPartition
    );
    drop(c);

    // Everything comes back after a restart: ids, versions, deletes, levels, policies.
    b.stop().await;
    b.restart_broker().await;
    let mut c = b.client("alice").await;
    assert_eq!(c.schema_subjects(false).await.unwrap(), vec!["orders-value"]);
    assert_eq!(c.schema_subjects(true).await.unwrap(), vec!["copies-value", "orders-value"]);
    assert_eq!(c.schema_by_id(2).await.unwrap().1, ORDER_V2);
    assert_eq!(c.schema_compatibility(Some("orders-value"), false).await.unwrap(), Compatibility::Full);
    assert_eq!(c.topic_schema_policy("orders").await.unwrap(), (SchemaPolicy::Enforce, true));
    // Ids continue after the recovered ones.
    assert_eq!(c.register_schema("other-value", SchemaType::Avro, r#""string""#).await.unwrap(), (3, 1));
}

#[tokio::test]
async fn topic_policies_none_warn_enforce() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let (id, _) = c.register_schema("t-value", SchemaType::Json, ORDER).await.unwrap();
    let (other, _) = c.register_schema("u-value", SchemaType::Json, r#"{"type": "object"}"#).await.unwrap();
    for t in ["t", "u"] {
        c.create_topic(t, 1).await.unwrap();
    }
    let good = batch(&[(Some(id), br#"{"id": 1, "qty": 2}"#)]);
    let no_id = batch(&[(Some(id), br#"{"id": 1}"#), (None, br#"{"id": 2}"#)]);
    let wrong_subject = batch(&[(Some(other), br#"{"id": 1}"#)]);
    let invalid = batch(&[(Some(id), br#"{"id": 1, "qty": 0}"#)]);
    let confluent = Bytes::from(encode_confluent(id, None, br#"{"id": 3}"#));
    let confluent = batch(&[(None, &confluent)]);

    // none (the default): anything goes.
    for bt in [&good, &no_id, &wrong_subject, &invalid] {
        assert_eq!(c.produce("t", 0, Acks::Leader, bt.clone()).await.unwrap().error, ErrorCode::None);
    }
    // warn: stored, counted.
    c.set_topic_schema_policy("t", SchemaPolicy::Warn, false).await.unwrap();
    let before = b.handle.as_ref().unwrap().metrics().schema_policy_warnings;
    assert_eq!(c.produce("t", 0, Acks::Leader, no_id.clone()).await.unwrap().error, ErrorCode::None);
    assert_eq!(b.handle.as_ref().unwrap().metrics().schema_policy_warnings, before + 1);
    // enforce: refused with its own code; nothing stored.
    c.set_topic_schema_policy("t", SchemaPolicy::Enforce, false).await.unwrap();
    let end = c.fetch_all("t", 0, 0).await.unwrap().len();
    for bt in [&no_id, &wrong_subject] {
        let r = c.produce("t", 0, Acks::All, bt.clone()).await.unwrap();
        assert_eq!(r.error, ErrorCode::SchemaRequired, "{}", r.message);
        assert!(r.message.contains("t-value") || r.message.contains("no schema id"), "{}", r.message);
    }
    assert_eq!(c.fetch_all("t", 0, 0).await.unwrap().len(), end);
    assert_eq!(c.produce("t", 0, Acks::All, good.clone()).await.unwrap().error, ErrorCode::None);
    assert_eq!(c.produce("t", 0, Acks::All, confluent.clone()).await.unwrap().error, ErrorCode::None);
    // Payload validation is off by default; on, an invalid value is refused too.
    assert_eq!(c.produce("t", 0, Acks::All, invalid.clone()).await.unwrap().error, ErrorCode::None);
    c.set_topic_schema_policy("t", SchemaPolicy::Enforce, true).await.unwrap();
    let r = c.produce("t", 0, Acks::All, invalid.clone()).await.unwrap();
    assert_eq!(r.error, ErrorCode::InvalidRecord);
    assert!(r.message.contains("/qty") && r.message.contains("minimum"), "{}", r.message);
    assert_eq!(c.produce("t", 0, Acks::All, good).await.unwrap().error, ErrorCode::None);
    // Other topics are not affected.
    assert_eq!(c.produce("u", 0, Acks::All, no_id).await.unwrap().error, ErrorCode::None);
}

#[tokio::test]
async fn subjects_are_protected_by_the_acl() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        r#"
        [[allow]]
        principal = "alice"
        topics = ["orders"]
        subjects = ["orders-value"]
        permissions = ["read", "write"]
        [[allow]]
        principal = "bob"
        subjects = ["*"]
        permissions = ["read", "admin"]
        "#,
    )
    .unwrap();
    let b = TestBroker::start_with(|c| c.acl_file = Some(acl.clone())).await;
    let mut alice = b.client("alice").await;
    let mut bob = b.client("bob").await;
    let mut carol = b.client("carol").await;
    assert_eq!(alice.register_schema("orders-value", SchemaType::Json, ORDER).await.unwrap(), (1, 1));
    assert_eq!(
        code(alice.register_schema("payments-value", SchemaType::Json, ORDER).await.unwrap_err()),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(
        code(bob.register_schema("orders-value", SchemaType::Json, ORDER_V2).await.unwrap_err()),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(bob.schema_versions("orders-value", false).await.unwrap(), vec![1]);
    assert_eq!(code(carol.schema_by_id(1).await.unwrap_err()), ErrorCode::AuthorizationFailed);
    assert!(carol.schema_subjects(false).await.unwrap().is_empty());
    // Configuration and deletes need admin; the global level needs it on every subject.
    assert_eq!(
        code(alice.set_schema_compatibility(Some("orders-value"), None).await.unwrap_err()),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(
        code(alice.set_schema_compatibility(None, Some(Compatibility::None)).await.unwrap_err()),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(
        bob.set_schema_compatibility(None, Some(Compatibility::Forward)).await.unwrap(),
        Some(Compatibility::Backward)
    );
    assert_eq!(
        code(alice.delete_schema("orders-value", None, false).await.unwrap_err()),
        ErrorCode::AuthorizationFailed
    );
    assert_eq!(bob.delete_schema("orders-value", None, false).await.unwrap(), vec![1]);
    // A topic's policy needs admin on the topic.
    assert_eq!(
        code(alice.set_topic_schema_policy("orders", SchemaPolicy::Enforce, false).await.unwrap_err()),
        ErrorCode::AuthorizationFailed
    );
}
