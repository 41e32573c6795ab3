//! The tracing spans carry the fields people search by: a broker's produce span (topic,
//! partition, producer id, epoch, sequence, correlation id, principal) seen in JSON logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{batch, stamp, TestBroker};
use qwire::protocol::{Acks, Compression, ErrorCode};

/// A `MakeWriter` collecting everything written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    }
}

/// JSON logs at debug level for qwire, on this thread (the test runtime is single-threaded).
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter("qwire=debug")
        .with_writer(move || writer.clone())
        .finish();
    (out, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_produce_span_carries_topic_partition_producer_sequence_and_correlation_id() {
    let (logs, _guard) = capture();
    let b = TestBroker::start().await;
    let mut client = b.client("alice").await;
    client.create_topic("traced", 2).await.unwrap();
    let (pid, epoch) = client.init_producer_id(-1, -1).await.unwrap();
    let r = client
        .produce("traced", 1, Acks::Leader, batch("t", 3, stamp(pid, epoch, 0), Compression::None))
        .await
        .unwrap();
    assert_eq!(r.error, ErrorCode::None);
    // A producer id this broker never issued: refused inside the span, after the header
    // was read.
    let r = client
        .produce("traced", 0, Acks::Leader, batch("u", 1, stamp(pid + 1000, 0, 7), Compression::None))
        .await
        .unwrap();
    assert_eq!(r.error, ErrorCode::InvalidProducerId);
    client.close();

    let lines = logs.lines();
    let event = |msg: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == msg)
            .unwrap_or_else(|| panic!("no '{msg}' event in {lines:#?}"))
            .clone()
    };
    let appended = event("produce appended");
    let span = &appended["span"];
    assert_eq!(span["name"], "produce");
    assert_eq!(span["topic"], "traced");
    assert_eq!(span["partition"], 1);
    assert_eq!(span["producer_id"], pid);
    assert_eq!(span["producer_epoch"], epoch);
    assert_eq!(span["sequence"], 0);
    assert_eq!(span["records"], 3);
    assert_eq!(span["base_offset"], 0);
    assert_eq!(span["principal"], "alice");
    assert_eq!(span["acks"], "leader");
    assert!(span["correlation_id"].as_u64().is_some());
    // The connection's span is the produce span's parent.
    let parents = appended["spans"].as_array().unwrap();
    assert_eq!(parents[0]["name"], "connection");
    assert_eq!(parents[0]["principal"], "alice");

    let refused = event("produce refused");
    assert_eq!(refused["span"]["producer_id"], pid + 1000);
    assert_eq!(refused["span"]["sequence"], 7);
    assert_eq!(refused["span"]["partition"], 0);
}

#[tokio::test]
async fn a_producer_batch_span_follows_the_batch_from_seal_to_acknowledgement() {
    let (logs, _guard) = capture();
    let b = TestBroker::start().await;
    let producer = common::producer(&b, "alice").client_id("traced-producer").build().unwrap();
    let md = producer
        .send(qwire::producer::ProducerRecord::new("lifecycle", bytes::Bytes::from_static(b"hello")).partition(0))
        .await
        .unwrap();
    producer.close(std::time::Duration::from_secs(5)).await.unwrap();

    let lines = logs.lines();
    let batch_event = |msg: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == msg && l["span"]["name"] == "batch")
            .unwrap_or_else(|| panic!("no '{msg}' event in a batch span: {lines:#?}"))
            .clone()
    };
    let sealed = batch_event("batch sealed");
    assert_eq!(sealed["span"]["topic"], "lifecycle");
    assert_eq!(sealed["span"]["partition"], 0);
    assert_eq!(sealed["span"]["records"], 1);
    let sent = batch_event("batch sent");
    let acked = batch_event("batch acknowledged");
    for e in [&sent, &acked] {
        let s = &e["span"];
        assert_eq!(s["topic"], "lifecycle");
        assert_eq!(s["batch_id"], sealed["span"]["batch_id"]);
        assert!(s["producer_id"].as_i64().unwrap() >= 0, "idempotent: a producer id");
        assert_eq!(s["producer_epoch"], 0);
        assert_eq!(s["sequence"], 0);
        assert_eq!(s["attempt"], 1);
        assert!(s["correlation_id"].as_u64().is_some());
    }
    assert_eq!(acked["fields"]["base_offset"], md.offset.unwrap());
    // The broker's produce span for the same request has the same correlation id and
    // producer id.
    let appended = lines.iter().find(|l| l["fields"]["message"] == "produce appended").expect("broker event");
    assert_eq!(appended["span"]["correlation_id"], sent["span"]["correlation_id"]);
    assert_eq!(appended["span"]["producer_id"], sent["span"]["producer_id"]);
}
