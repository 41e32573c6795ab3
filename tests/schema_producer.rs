//! The producer with schemas, against a real broker: records naming a subject are
//! validated before they are queued (an invalid one fails naming path and rule, nothing is
//! sent), carry the schema id as a header or in Confluent's wire format, and the typed
//! producer (`producer.typed::<T>()`) sends derive-annotated serde values.

mod common;

use std::time::Duration;

use common::{producer, TestBroker};
use qwire::producer::{ErrorKind, ProducerRecord};
use qwire::protocol::ErrorCode;
use qwire::schema::policy::record_schema_id;
use qwire::schema::wire::{get_message_index, split_confluent};
use qwire::schema::{IdPlacement, ParsedSchema, SchemaPolicy, SchemaRecord, SchemaType};
use serde::Serialize;

const ORDER: &str = r#"{"type": "object", "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}, "required": ["id", "qty"], "additionalProperties": false}"#;

#[derive(Serialize, SchemaRecord)]
#[qwire(
    topic = "orders",
    key = "id",
    schema = r#"{"type": "object", "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}, "required": ["id", "qty"], "additionalProperties": false}"#
)]
struct Order {
    id: String,
    qty: u32,
}

#[derive(Serialize, SchemaRecord)]
#[qwire(topic = "users", key = "id", format = "avro", schema_file = "tests/schema/user.avsc")]
struct User {
    id: i64,
    name: String,
    email: Option<String>,
}

#[derive(Serialize, SchemaRecord)]
#[qwire(
    topic = "events",
    format = "protobuf",
    message = "demo.Event",
    schema = "syntax = \"proto3\"; package demo; message Other { int32 x = 1; } message Event { string name = 1; int64 at = 2; }"
)]
struct Event {
    name: String,
    at: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_producer_sends_json_avro_and_protobuf() {
    let b = TestBroker::start().await;
    let p = producer(&b, "alice").schema_id_placement(IdPlacement::Confluent).build().unwrap();
    let mut c = b.client("alice").await;

    let orders = p.typed::<Order>().await.unwrap();
    let md = orders.send(&Order { id: "o-1".into(), qty: 2 }).await.unwrap();
    assert_eq!(md.topic.as_ref(), "orders");
    // send_nowait: a future for this record only.
    let ack = orders.send_nowait(&Order { id: "o-2".into(), qty: 1 }).await.unwrap();
    assert_eq!(ack.await.unwrap().offset, Some(1));
    // The blocking form, from a thread outside the runtime.
    let o = orders.clone();
    let md = tokio::task::spawn_blocking(move || o.send_blocking(&Order { id: "o-3".into(), qty: 5 }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(md.offset, Some(2));
    // Invalid: fails at once naming path and rule; nothing is sent.
    let e = orders.send(&Order { id: "o-4".into(), qty: 0 }).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert!(e.message().contains("/qty") && e.message().contains("minimum"), "{e}");
    p.flush().await.unwrap();
    let stored = c.fetch_all("orders", 0, 0).await.unwrap();
    assert_eq!(stored.len(), 3);
    let (id, payload) = split_confluent(stored[0].value.as_deref().unwrap()).unwrap();
    assert_eq!((id, payload), (orders.schema_id(), &br#"{"id":"o-1","qty":2}"#[..]));
    assert_eq!(stored[0].key.as_deref(), Some(&b"o-1"[..]));
    // The schema was registered under the type's subject.
    assert_eq!(c.schema_version("orders-value", None, false).await.unwrap().id, orders.schema_id());

    let users = p.typed::<User>().await.unwrap();
    users.send(&User { id: 7, name: "ann".into(), email: None }).await.unwrap();
    let stored = c.fetch_all("users", 0, 0).await.unwrap();
    let (id, payload) = split_confluent(stored[0].value.as_deref().unwrap()).unwrap();
    let (t, text) = c.schema_by_id(id).await.unwrap();
    assert_eq!(t, SchemaType::Avro);
    let parsed = ParsedSchema::parse(t, &text).unwrap();
    assert_eq!(
        parsed.decode_to_json(payload, &[]).unwrap(),
        serde_json::json!({"id": 7, "name": "ann", "email": null})
    );

    let events = p.typed::<Event>().await.unwrap();
    events.send(&Event { name: "boot".into(), at: 9 }).await.unwrap();
    let stored = c.fetch_all("events", 0, 0).await.unwrap();
    let (_, rest) = split_confluent(stored[0].value.as_deref().unwrap()).unwrap();
    // demo.Event is the second top-level message: index [1].
    assert_eq!(get_message_index(rest).unwrap(), (vec![1], 2));
    p.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_naming_a_subject_are_validated_before_they_are_queued() {
    let b = TestBroker::start().await;
    let mut c = b.client("alice").await;
    let (id, _) = c.register_schema("orders-value", SchemaType::Json, ORDER).await.unwrap();
    c.create_topic("orders", 1).await.unwrap();
    // The broker enforces the subject too: every record below that it stores carries the id.
    c.set_topic_schema_policy("orders", SchemaPolicy::Enforce, true).await.unwrap();
    let p = producer(&b, "alice").schema_subject_for("orders", "orders-value").build().unwrap();

    // try_send cannot wait for the schema: it says so until the schema is resolved.
    let e = p.try_send(ProducerRecord::new("orders", r#"{"id": "a", "qty": 1}"#)).unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Schema);
    assert!(e.error.message().contains("resolve_schema"), "{}", e.error);
    assert_eq!(e.record.headers.len(), 0, "the record comes back as it was given");
    assert_eq!(p.resolve_schema("orders-value").await.unwrap(), id);
    p.partitions_for("orders").await.unwrap();
    p.try_send(ProducerRecord::new("orders", r#"{"id": "a", "qty": 1}"#)).unwrap().await.unwrap();

    // The topic's default subject applies; a record may name one itself.
    p.send(ProducerRecord::new("orders", r#"{"id": "b", "qty": 2}"#)).await.unwrap();
    p.send(ProducerRecord::new("orders", r#"{"id": "c", "qty": 3}"#).schema_subject("orders-value")).await.unwrap();
    for (bad, path, rule) in [
        (r#"{"id": "d", "qty": 0}"#, "/qty", "minimum"),
        (r#"{"id": "e"}"#, "", "required"),
        (r#"{"id": "f", "qty": 1, "x": 1}"#, "", "additionalProperties"),
        ("not json", "", "json"),
    ] {
        let e = p.send(ProducerRecord::new("orders", bad)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Schema, "{bad}: {e}");
        assert!(e.message().contains(&format!("at {}", if path.is_empty() { "/" } else { path })), "{e}");
        assert!(e.message().contains(rule), "{e}");
    }
    let e = p.send(ProducerRecord::new("orders", "{}").schema_subject("nope-value")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert!(e.message().contains("SCHEMA_SUBJECT_NOT_FOUND") || e.message().contains("not found"), "{e}");
    p.flush().await.unwrap();
    let stored = c.fetch_all("orders", 0, 0).await.unwrap();
    assert_eq!(stored.len(), 3, "only the valid records were sent");
    for r in &stored {
        let found = record_schema_id(&r.headers, r.value.as_deref()).unwrap();
        assert_eq!((found.id, found.confluent), (id, false));
    }
    // A producer that does not validate is refused by the enforcing broker.
    let raw = producer(&b, "alice").build().unwrap();
    let e = raw.send(ProducerRecord::new("orders", r#"{"id": "z", "qty": 1}"#)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Broker(ErrorCode::SchemaRequired), "{e}");
}
