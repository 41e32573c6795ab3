#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! Record batch and frame codecs: encode and decode per record size.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qwire::protocol::frame::Produce;
use qwire::protocol::{Acks, BatchBuilder, Compression, Frame, Header, Payload, ProducerStamp, Record, RecordBatch};

const BATCH_BYTES: usize = 64 * 1024;

fn records(size: usize) -> Vec<Record> {
    let n = (BATCH_BYTES / (size + 16)).max(1);
    (0..n)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![(i % 251) as u8; size])),
            headers: vec![Header { key: "h".into(), value: Some(Bytes::from_static(b"v")) }],
        })
        .collect()
}

fn batch_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    for size in [10usize, 100, 1024, 10 * 1024] {
        let recs = records(size);
        g.throughput(Throughput::Elements(recs.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", size), &recs, |b, recs| {
            b.iter(|| {
                let mut builder = BatchBuilder::with_capacity(BATCH_BYTES);
                for r in recs {
                    builder.push(r);
                }
                builder.seal(Compression::None, None, ProducerStamp::NONE)
            })
        });
        let mut builder = BatchBuilder::new();
        for r in &recs {
            builder.push(r);
        }
        let sealed = builder.seal(Compression::None, None, ProducerStamp::NONE);
        g.bench_with_input(BenchmarkId::new("check_crc", size), &sealed, |b, s| {
            b.iter(|| RecordBatch::from_bytes(s.clone()).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("validate_records", size), &sealed, |b, s| {
            let batch = RecordBatch::from_bytes(s.clone()).unwrap();
            b.iter(|| batch.validate_records(1 << 26).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &sealed, |b, s| {
            let batch = RecordBatch::from_bytes(s.clone()).unwrap();
            b.iter(|| batch.records(1 << 26).unwrap())
        });
    }
    g.finish();
}

fn frame_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let batch = {
        let mut b = BatchBuilder::new();
        for r in records(100) {
            b.push(&r);
        }
        b.seal(Compression::None, None, ProducerStamp::NONE)
    };
    let frame = Frame {
        correlation_id: 7,
        payload: Payload::Produce(Produce {
            topic: "orders".into(),
            partition: 3,
            acks: Acks::Leader,
            timeout_ms: 0,
            batch,
        }),
    };
    g.throughput(Throughput::Bytes(frame.encoded_len() as u64));
    g.bench_function("produce_encode", |b| {
        let mut buf = BytesMut::with_capacity(frame.encoded_len());
        b.iter(|| {
            buf.clear();
            frame.encode(&mut buf);
        })
    });
    let mut encoded = BytesMut::new();
    frame.encode(&mut encoded);
    g.bench_function("produce_decode", |b| {
        b.iter(|| {
            let mut buf = encoded.clone();
            Frame::decode(&mut buf, 16 << 20).unwrap().unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, batch_codec, frame_codec);
criterion_main!(benches);
