#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! The producer's pure pieces: accumulator enqueue from 1, 2 and 4 threads, the
//! partitioners, and in-flight window bookkeeping.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qwire::producer::bench_support::{window_cycle, Queues};
use qwire::producer::PartitionStrategy;
use qwire::protocol::Record;

const PER_THREAD: u64 = 100_000;

fn record(i: u64, value: &Bytes) -> Record {
    Record { timestamp: i as i64, key: None, value: Some(value.clone()), headers: vec![] }
}

fn accumulator(c: &mut Criterion) {
    let mut g = c.benchmark_group("accumulator_enqueue");
    let value = Bytes::from(vec![7u8; 100]);
    for threads in [1u64, 2, 4] {
        g.throughput(Throughput::Elements(PER_THREAD * threads));
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &threads| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let q = Arc::new(Queues::new(16));
                    let start = Instant::now();
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let (q, value) = (q.clone(), value.clone());
                            std::thread::spawn(move || {
                                for i in 0..PER_THREAD {
                                    q.push(((t * 7 + i) % 16) as u32, record(i, &value));
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().unwrap();
                    }
                    total += start.elapsed();
                    assert_eq!(q.drain() as u64, PER_THREAD * threads);
                }
                total
            })
        });
    }
    g.finish();
}

fn partitioners(c: &mut Criterion) {
    let mut g = c.benchmark_group("partitioner");
    let keys: Vec<Vec<u8>> = (0..1024).map(|i| format!("customer-{i}").into_bytes()).collect();
    g.throughput(Throughput::Elements(keys.len() as u64));
    for strategy in [
        PartitionStrategy::Default,
        PartitionStrategy::KeyHash,
        PartitionStrategy::RoundRobin,
        PartitionStrategy::Sticky,
    ] {
        let p = strategy.build();
        let keyed = !matches!(strategy, PartitionStrategy::RoundRobin | PartitionStrategy::Sticky);
        g.bench_function(strategy.name(), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                for k in &keys {
                    sum = sum.wrapping_add(p.partition("orders", keyed.then_some(k.as_slice()), 12).unwrap());
                }
                sum
            })
        });
    }
    g.finish();
}

fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("push_send_ack_1000_batches", |b| b.iter(|| window_cycle(1000)));
    g.finish();
}

criterion_group!(benches, accumulator, partitioners, window);
criterion_main!(benches);
