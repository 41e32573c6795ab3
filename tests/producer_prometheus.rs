//! The producer's Prometheus export against a real broker: the exposition parses, the
//! counters equal what was sent, histograms count every record, series are labelled by
//! client id and vanish with their producer.

mod common;

use bytes::Bytes;
use common::{producer, TestBroker};
use qwire::producer::prometheus::{DuplicateClientId, ProducerCollector};
use qwire::producer::ProducerRecord;
use qwire::prometheus::prometheus_client::registry::Registry;

fn scrape(registry: &Registry) -> Vec<prometheus_parse::Sample> {
    let text = qwire::prometheus::encode(registry);
    for line in text.lines() {
        assert!(
            !matches!(prometheus_parse::LineInfo::parse(line), prometheus_parse::LineInfo::Ignored),
            "not Prometheus text: {line}"
        );
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap().samples
}

fn value(samples: &[prometheus_parse::Sample], metric: &str, client: &str) -> Option<f64> {
    samples.iter().find(|s| s.metric == metric && s.labels.get("client_id") == Some(client)).and_then(|s| {
        match &s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => Some(*v),
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count)
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn producer_metrics_export_counts_what_was_sent() {
    let b = TestBroker::start().await;
    let a = producer(&b, "alice").client_id("svc-a").build().unwrap();
    let c = producer(&b, "alice").client_id("svc-b").build().unwrap();

    let collector = ProducerCollector::new();
    collector.add(&a).unwrap();
    collector.add(&c).unwrap();
    let twin = producer(&b, "alice").client_id("svc-a").build().unwrap();
    assert_eq!(collector.add(&twin), Err(DuplicateClientId("svc-a".into())));
    drop(twin);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector.clone()));

    let results =
        a.send_batch((0..25).map(|i| ProducerRecord::new("metrics", Bytes::from(format!("r{i}"))))).await.await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    c.send(ProducerRecord::new("metrics", Bytes::from_static(b"one"))).await.unwrap();

    let samples = scrape(&registry);
    let snap = a.metrics();
    assert_eq!(value(&samples, "qwire_producer_records_sent_total", "svc-a"), Some(25.0));
    assert_eq!(value(&samples, "qwire_producer_records_sent_total", "svc-b"), Some(1.0));
    assert_eq!(value(&samples, "qwire_producer_records_failed_total", "svc-a"), Some(0.0));
    assert_eq!(value(&samples, "qwire_producer_batches_sent_total", "svc-a"), Some(snap.batches_sent as f64));
    assert_eq!(value(&samples, "qwire_producer_sent_bytes_total", "svc-a"), Some(snap.bytes_sent as f64));
    assert_eq!(value(&samples, "qwire_producer_in_flight_batches", "svc-a"), Some(0.0));
    // Every record's latency is in the histogram's +Inf bucket (its count).
    assert_eq!(value(&samples, "qwire_producer_record_latency_seconds", "svc-a"), Some(25.0));
    assert_eq!(value(&samples, "qwire_producer_queue_time_seconds", "svc-a"), Some(25.0));
    assert_eq!(
        value(&samples, "qwire_producer_round_trip_seconds", "svc-a"),
        Some(snap.round_trip.count as f64),
        "one round trip per batch"
    );

    // A dropped producer's series disappear; the other's stay.
    c.close(std::time::Duration::from_secs(5)).await.unwrap();
    drop(c);
    let samples = scrape(&registry);
    assert_eq!(value(&samples, "qwire_producer_records_sent_total", "svc-b"), None);
    assert_eq!(value(&samples, "qwire_producer_records_sent_total", "svc-a"), Some(25.0));
    assert_eq!(collector.client_ids(), vec!["svc-a".to_string()]);
    a.close(std::time::Duration::from_secs(5)).await.unwrap();
}
