//! A typed producer: a serde struct that names its topic, key field, schema and format.
//! The schema is registered (or found) once; every value is validated before it is queued
//! and carries its schema id, so an invalid value fails at once and nothing is sent.
//!
//! ```sh
//! cargo run -- certs --out certs                                            # once
//! cargo run -- broker --certs certs --data-dir /tmp/qwire-data              # in one shell
//! cargo run --example typed_producer                                        # in another
//! cargo run -- consume -t orders --format json --decode --certs certs       # read it back
//! ```
//! `QWIRE_BROKER` (default `127.0.0.1:7878`), `QWIRE_CERTS` (default `certs`) and
//! `QWIRE_CLIENT` (default `client`) choose the broker and the client certificate.

use std::time::Duration;

use qwire::producer::{ErrorKind, Producer, TlsConfig};
use qwire::schema::{IdPlacement, SchemaRecord};
use serde::Serialize;

/// An order, written as an Avro record (schema in examples/schemas/order.avsc) under the
/// subject `orders-value`, keyed by its id.
#[derive(Serialize, SchemaRecord)]
#[qwire(topic = "orders", key = "id", format = "avro", schema_file = "examples/schemas/order.avsc")]
struct Order {
    id: String,
    customer: String,
    qty: i32,
    status: String,
    note: Option<String>,
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let certs = env("QWIRE_CERTS", "certs");
    let producer = Producer::builder()
        .bootstrap(env("QWIRE_BROKER", "127.0.0.1:7878"))
        .tls(TlsConfig::from_dir(certs.as_ref(), &env("QWIRE_CLIENT", "client"))?)
        // Confluent's wire format, so Confluent's Avro deserializers read these records too.
        .schema_id_placement(IdPlacement::Confluent)
        .build()?;

    let orders = producer.typed::<Order>().await?;
    println!("schema id {} for subject {}", orders.schema_id(), Order::subject());

    // Wait for each acknowledgement...
    let md = orders
        .send(&Order { id: "o-1".into(), customer: "ann".into(), qty: 2, status: "NEW".into(), note: None })
        .await?;
    println!("o-1 -> {}-{} @ offset {:?}", md.topic, md.partition, md.offset);

    // ...or queue several and await each record's own future (not a flush of the producer).
    let mut acks = Vec::new();
    for i in 2..=4 {
        let o = Order {
            id: format!("o-{i}"),
            customer: "bob".into(),
            qty: i,
            status: "PAID".into(),
            note: Some("gift".into()),
        };
        acks.push(orders.send_nowait(&o).await?);
    }
    for (i, ack) in (2..).zip(acks) {
        println!("o-{i} -> offset {:?}", ack.await?.offset);
    }

    // A value the schema refuses never leaves the process: the error names the path and
    // the rule ("LOST" is not a symbol of the Status enum).
    let lost = Order { id: "o-5".into(), customer: "cy".into(), qty: 1, status: "LOST".into(), note: None };
    match orders.send(&lost).await {
        Err(e) if e.kind() == ErrorKind::Schema => println!("refused before sending: {}", e.message()),
        other => println!("unexpected: {other:?}"),
    }

    producer.close(Duration::from_secs(5)).await?;
    Ok(())
}
