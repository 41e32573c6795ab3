//! Property tests that start from valid batches, damage their records, and keep the CRC
//! valid, so that the cases reach the record decoder instead of stopping at the CRC. Each
//! test counts the cases that got that far and fails when too few did: a property checked
//! only on inputs every check rejects proves nothing.

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;

const CASES: u32 = 512;

fn arb_record() -> impl Strategy<Value = Record> {
    (
        0i64..100_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::collection::vec(
            ("[a-z]{0,4}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6))),
            0..3,
        ),
    )
        .prop_map(|(timestamp, key, value, headers)| Record {
            timestamp,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers.into_iter().map(|(key, value)| Header { key, value: value.map(Bytes::from) }).collect(),
        })
}

/// A change to a byte sequence: set a byte, drop one, insert one, or cut the rest.
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, from: usize, m: &Mutation) {
    if bytes.len() <= from {
        return;
    }
    let span = bytes.len() - from;
    match m {
        Mutation::Set(i, b) => {
            let at = from + i.index(span);
            bytes[at] = *b;
        }
        Mutation::Remove(i) => {
            bytes.remove(from + i.index(span));
        }
        Mutation::Insert(i, b) => bytes.insert(from + i.index(span + 1), *b),
        Mutation::Truncate(i) => bytes.truncate(from + i.index(span)),
    }
}

/// The uncompressed records section of `records`, as `BatchBuilder` lays it out.
fn section(records: &[Record]) -> (Vec<u8>, i64, i64) {
    let mut b = BatchBuilder::new();
    for r in records {
        b.push(r);
    }
    let (base, max) = (b.base_timestamp, b.max_timestamp);
    (b.buf[BATCH_HEADER_LEN..].to_vec(), base, max)
}

/// A batch holding `section` compressed with `codec`, claiming `count` records, with a
/// correct header and CRC.
fn batch_of(section: &[u8], codec: Compression, count: u32, base: i64, max: i64) -> Bytes {
    let mut out = vec![0u8; BATCH_HEADER_LEN];
    codec.compress(section, None, &mut out);
    write_header(&mut out, codec, count, base, max, ProducerStamp::NONE);
    Bytes::from(out)
}

#[test]
fn validate_records_agrees_with_records() {
    // Valid records, their section damaged, then compressed and sealed with a correct CRC:
    // every case reaches the record decoder, and the broker's pre-append check must accept
    // exactly what a consumer can decode.
    let strategy = (
        proptest::collection::vec(arb_record(), 1..8),
        proptest::sample::select(Compression::ALL.to_vec()),
        proptest::collection::vec(arb_mutation(), 0..3),
    );
    let (accepted, refused) = (Cell::new(0u32), Cell::new(0u32));
    let mut runner = TestRunner::new(Config { cases: CASES, ..Config::default() });
    runner
        .run(&strategy, |(records, codec, mutations)| {
            let (mut sec, base, max) = section(&records);
            for m in &mutations {
                mutate(&mut sec, 0, m);
            }
            let batch = RecordBatch::from_bytes(batch_of(&sec, codec, records.len() as u32, base, max))
                .expect("a sealed batch passes its header and CRC checks");
            let decoded = batch.records(1 << 20);
            prop_assert_eq!(batch.validate_records(1 << 20).is_ok(), decoded.is_ok(), "{:?}", decoded.err());
            if decoded.is_ok() {
                accepted.set(accepted.get() + 1);
            } else {
                refused.set(refused.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let (a, r) = (accepted.get(), refused.get());
    println!("validate_records vs records: {CASES} cases reached the record decoder: {a} accepted, {r} refused");
    assert_eq!(a + r, CASES);
    assert!(a >= CASES / 10 && r >= CASES / 10, "one outcome is too rare to test anything: {a} / {r}");
}

#[test]
fn damaged_batches_with_a_valid_crc_never_panic_the_decoder() {
    // Damage anywhere after the base offset, header included, then fix the CRC: the cases
    // that pass the header checks exercise the record decoder on hostile bytes.
    let strategy = (
        proptest::collection::vec(arb_record(), 1..6),
        proptest::sample::select(Compression::ALL.to_vec()),
        proptest::collection::vec(arb_mutation(), 1..4),
        any::<bool>(),
    );
    let reached = Cell::new(0u32);
    let mut runner = TestRunner::new(Config { cases: CASES, ..Config::default() });
    runner
        .run(&strategy, |(records, codec, mutations, header_too)| {
            let (sec, base, max) = section(&records);
            let mut bytes = batch_of(&sec, codec, records.len() as u32, base, max).to_vec();
            // Either the whole batch after base_offset and batch_length, or only the records.
            let from = if header_too { 12 } else { BATCH_HEADER_LEN };
            for m in &mutations {
                mutate(&mut bytes, from, m);
            }
            if bytes.len() >= BATCH_HEADER_LEN {
                let len = (bytes.len() - 12) as u32;
                bytes[8..12].copy_from_slice(&len.to_be_bytes());
                let crc = crc32c::crc32c(&bytes[CRC_START..]);
                bytes[13..17].copy_from_slice(&crc.to_be_bytes());
            }
            if let Ok(b) = RecordBatch::from_bytes(Bytes::from(bytes.clone())) {
                reached.set(reached.get() + 1);
                let _ = b.records(1 << 20);
                let _ = b.validate_records(1 << 20);
            }
            let _ = RecordBatch::split_all(Bytes::from(bytes));
            Ok(())
        })
        .unwrap();
    println!("damaged batches: {} of {CASES} reached the record decoder", reached.get());
    assert!(reached.get() >= CASES / 3, "only {} cases got past the header checks", reached.get());
}
