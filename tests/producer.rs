//! The producer engine against a real broker over QUIC + mTLS.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use qwire::producer::{ErrorKind, Persistence, PartitionStrategy, ProducerRecord};
use qwire::protocol::{Acks, Compression};

#[tokio::test]
async fn records_land_in_order_per_partition_with_contiguous_offsets() {
    let b = TestBroker::start().await;
    let mut admin = b.client("alice").await;
    admin.create_topic("orders", 4).await.unwrap();
    let p = producer(&b, "alice").linger(Duration::from_millis(2)).build().unwrap();
    let mut futures = Vec::new();
    for i in 0..2000 {
        let r = ProducerRecord::new("orders", format!("v{i}")).key(format!("k{}", i % 37));
        futures.push(p.enqueue(r).await.unwrap());
    }
    let mut per_partition: HashMap<u32, Vec<i64>> = HashMap::new();
    for f in futures {
        let md = f.await.unwrap();
        per_partition.entry(md.partition).or_default().push(md.offset.unwrap());
    }
    assert_eq!(per_partition.len(), 4, "37 keys spread over 4 partitions");
    for (part, offsets) in &per_partition {
        assert_eq!(offsets, &(0..offsets.len() as i64).collect::<Vec<_>>(), "partition {part}");
        let stored = admin.fetch_all("orders", *part, 0).await.unwrap();
        assert_eq!(stored.len(), offsets.len());
        // Send order is kept within the partition.
        let seq: Vec<usize> = values(&stored).iter().map(|v| v[1..].parse().unwrap()).collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "partition {part} out of order");
    }
    let m = p.metrics();
    assert_eq!(m.records_sent, 2000);
    assert!(m.avg_records_per_batch > 1.0, "records were batched: {m:?}");
    assert!(m.record_latency.count == 2000 && m.record_latency.p50_us > 0);
    p.close(Duration::from_secs(5)).await;
}
