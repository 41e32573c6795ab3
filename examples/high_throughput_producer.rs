//! Many small records as fast as the link allows: pipelined `enqueue`, large batches,
//! lz4, acks from the leader. Prints the rate and the producer's latency split.
//!
//! ```sh
//! cargo run --release -- broker --certs certs --data-dir /tmp/qwire-data
//! cargo run --release --example high_throughput_producer
//! ```
//! `QWIRE_RECORDS` (default 1000000) sets the record count.

use std::time::{Duration, Instant};

use bytes::Bytes;
use qwire::producer::{Producer, ProducerRecord, TlsConfig};
use qwire::protocol::{Acks, Compression};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = env("QWIRE_RECORDS", "1000000").parse()?;
    let producer = Producer::builder()
        .bootstrap(env("QWIRE_BROKER", "127.0.0.1:7878"))
        .tls(TlsConfig::from_dir(env("QWIRE_CERTS", "certs").as_ref(), &env("QWIRE_CLIENT", "client"))?)
        .acks(Acks::Leader)
        .compression(Compression::Lz4)
        .batch_size(256 * 1024)
        .linger(Duration::from_millis(5))
        .build()?;
    let topic: std::sync::Arc<str> = "throughput".into();
    producer.partitions_for(&topic).await?;

    let payload = Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    let mut pending = Vec::with_capacity(10_000);
    for _ in 0..total {
        let record = ProducerRecord::new(topic.clone(), payload.clone());
        pending.push(producer.enqueue(record).await?);
        if pending.len() == pending.capacity() {
            // Keep memory flat: settle the oldest acknowledgements in bulk.
            for f in pending.drain(..) {
                f.await?;
            }
        }
    }
    for f in pending {
        f.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let m = producer.metrics();
    println!(
        "{total} records in {secs:.2} s: {:.0} records/s, {:.1} MB/s of values",
        total as f64 / secs,
        total as f64 * 100.0 / secs / 1e6
    );
    println!(
        "batches: {:.0} records, {:.0} bytes on average, compression ratio {:.2}",
        m.avg_records_per_batch, m.avg_batch_bytes, m.compression_ratio
    );
    println!(
        "latency p50/p99 (µs): queue {}/{}, send {}/{}, round trip {}/{}, record {}/{}",
        m.queue_time.p50_us,
        m.queue_time.p99_us,
        m.send_time.p50_us,
        m.send_time.p99_us,
        m.round_trip.p50_us,
        m.round_trip.p99_us,
        m.record_latency.p50_us,
        m.record_latency.p99_us
    );
    producer.close(Duration::from_secs(10)).await?;
    Ok(())
}
