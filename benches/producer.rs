#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The producer's per-record and per-batch path (issue 15):
//! - `producer_send`: `Producer::send_with_callback` into a real producer connected to a
//!   broker on loopback. Only the calls are timed (the producer's driver does not run
//!   while a chunk is enqueued on the single-threaded runtime; each chunk is then flushed,
//!   untimed), so the figure is the caller's cost per record: checks, topic lookup,
//!   partitioner, buffer memory, queue push, delivery.
//! - `seal`: what the driver does per record when it seals a batch: the size check against
//!   the limit, then the encoding, then the CRC.
//! - `restamp`: a sealed batch gets its producer id, epoch and sequence at its first send.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qwire::broker::{self, BrokerConfig, BrokerTls};
use qwire::producer::bench_support::{entry_list, LatencyRecorder};
use qwire::producer::{Producer, ProducerRecord, TlsConfig};
use qwire::protocol::batch::{restamp, restamp_owned};
use qwire::protocol::{Acks, BatchBuilder, Compression, ProducerStamp, Record};
use qwire::transport::certs::generate_dev_certs;

const BATCH_BYTES: usize = 256 * 1024;
/// Records enqueued per timed chunk (then flushed, untimed): well within buffer memory.
const CHUNK: u64 = 20_000;
/// Records acknowledged (the callbacks count here).
static ACKED: AtomicU64 = AtomicU64::new(0);
/// Whether `producer_send` sent anything (a filter may leave it out).
static SENT: AtomicBool = AtomicBool::new(false);

fn value(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

fn producer_send(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_dev_certs(certs.path(), &["bench".to_string()], &[]).unwrap();
    let (handle, producer) = rt.block_on(async {
        let tls = BrokerTls::load(certs.path()).unwrap();
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.path().to_path_buf(),
            sink: true,
            ..BrokerConfig::default()
        };
        let handle = broker::start(config, tls).await.unwrap();
        let producer = Producer::builder()
            .bootstrap(handle.local_addr().to_string())
            .tls(TlsConfig::from_dir(certs.path(), "bench").unwrap())
            .acks(Acks::Leader)
            .batch_size(BATCH_BYTES)
            .linger(Duration::from_millis(5))
            .buffer_memory(256 << 20)
            .build()
            .unwrap();
        producer.partitions_for("bench").await.unwrap();
        (handle, producer)
    });
    let topic: Arc<str> = Arc::from("bench");
    let mut g = c.benchmark_group("producer_send");
    for size in [100usize, 1024] {
        let v = value(size);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("send_with_callback", size), &size, |b, _| {
            b.iter_custom(|iters| {
                SENT.store(true, Ordering::Relaxed);
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        let start = Instant::now();
                        for _ in 0..n {
                            // A callback without captures: the producer's own cost, not a
                            // caller's allocation.
                            producer
                                .send_with_callback(ProducerRecord::new(topic.clone(), v.clone()), |r| {
                                    if r.is_ok() {
                                        ACKED.fetch_add(1, Ordering::Relaxed);
                                    }
                                })
                                .await
                                .unwrap();
                        }
                        timed += start.elapsed();
                        producer.flush().await.unwrap();
                        left -= n;
                    }
                    timed
                })
            })
        });
    }
    g.finish();
    // Only when the group ran (a filter may leave it out).
    assert!(!SENT.load(Ordering::Relaxed) || ACKED.load(Ordering::Relaxed) > 0);
    rt.block_on(async {
        producer.close(Duration::from_secs(10)).await.unwrap();
        handle.shutdown().await;
    });
}

fn records(size: usize) -> Vec<Record> {
    let v = value(size);
    let n = BATCH_BYTES / (size + 8);
    (0..n)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64 / 100,
            key: None,
            value: Some(v.clone()),
            headers: vec![],
        })
        .collect()
}

/// The driver's sealing loop: check that the next record fits, append it, seal. `measure_twice`
/// is the loop before issue 15 (`record_size` then `push`), `push_within` measures once.
fn seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal");
    for size in [100usize, 1024] {
        let recs = records(size);
        g.throughput(Throughput::Elements(recs.len() as u64));
        g.bench_with_input(BenchmarkId::new("measure_twice_256KiB", size), &recs, |b, recs| {
            b.iter(|| {
                let mut builder = BatchBuilder::with_capacity(BATCH_BYTES);
                for r in recs {
                    if !builder.is_empty() && builder.size_bytes() + builder.record_size(r) > BATCH_BYTES {
                        break;
                    }
                    builder.push(r);
                }
                builder.seal(Compression::None, None, ProducerStamp::NONE)
            })
        });
        g.bench_with_input(BenchmarkId::new("push_within_256KiB", size), &recs, |b, recs| {
            b.iter(|| {
                let mut builder = BatchBuilder::with_capacity(BATCH_BYTES);
                for r in recs {
                    if !builder.push_within(r, BATCH_BYTES) {
                        break;
                    }
                }
                builder.seal(Compression::None, None, ProducerStamp::NONE)
            })
        });
        // The buffer of the previous (acknowledged) batch reused, as the driver does.
        g.bench_with_input(BenchmarkId::new("push_within_reused_256KiB", size), &recs, |b, recs| {
            let mut spare: Option<BytesMut> = None;
            b.iter(|| {
                let mut builder = match spare.take() {
                    Some(buf) => BatchBuilder::with_buffer(buf),
                    None => BatchBuilder::with_capacity(BATCH_BYTES),
                };
                for r in recs {
                    if !builder.push_within(r, BATCH_BYTES) {
                        break;
                    }
                }
                let sealed = builder.seal(Compression::None, None, ProducerStamp::NONE);
                let n = sealed.len();
                spare = sealed.try_into_mut().ok();
                n
            })
        });
    }
    g.finish();
}

/// The driver's per-batch latency bookkeeping (queue time at seal, record latency at the
/// ack) for a batch of 2 500 records enqueued at about 2.5 records per µs.
fn latency_histograms(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_latencies");
    let values: Vec<u64> = (0..2500u64).map(|i| 3000 - i * 2 / 5).collect();
    g.throughput(Throughput::Elements(values.len() as u64));
    let mut h = LatencyRecorder::default();
    g.bench_function("record_each", |b| b.iter(|| h.record(&values, false)));
    let mut h = LatencyRecorder::default();
    g.bench_function("record_runs", |b| b.iter(|| h.record(&values, true)));
    g.finish();
}

/// A sealed batch's record list (2 496 records of 100 B in 256 KiB): grown as records come
/// (before issue 15) or sized from the first record.
fn record_list(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_list");
    let n = 256 * 1024 / 105;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("grown", |b| b.iter(|| entry_list(n, 256 * 1024, 121, false)));
    g.bench_function("reserved", |b| b.iter(|| entry_list(n, 256 * 1024, 121, true)));
    g.finish();
}

/// A sealed 256 KiB batch stamped for its first send.
fn stamp(c: &mut Criterion) {
    let mut g = c.benchmark_group("restamp");
    let mut builder = BatchBuilder::with_capacity(BATCH_BYTES);
    for r in records(1024) {
        builder.push(&r);
    }
    let sealed = builder.seal(Compression::None, None, ProducerStamp::NONE);
    let want = ProducerStamp { producer_id: 42, producer_epoch: 1, base_sequence: 1000 };
    g.throughput(Throughput::Bytes(sealed.len() as u64));
    g.bench_function("copy_256KiB", |b| b.iter(|| restamp(&sealed, want)));
    // The batch is the only handle to its bytes at its first send: in place, the CRC
    // updated from the changed bytes (the copy made in setup is not timed).
    g.bench_function("in_place_256KiB", |b| {
        b.iter_batched(
            || Bytes::copy_from_slice(&sealed),
            |owned| restamp_owned(owned, want),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, producer_send, seal, stamp, latency_histograms, record_list);
criterion_main!(benches);
