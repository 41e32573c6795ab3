//! Regression tests from fuzzing (`fuzz/`), through the public API.
//!
//! The fuzz runs recorded in RELIABILITY.md found no crash in the frame decoder, the batch
//! decoders (every codec) or storage recovery. What lives here:
//! - a seeded, deterministic version of the `storage_recovery` target that runs on stable
//!   in every `cargo test`: damaged segment and index files must open cleanly or fail with
//!   an error, never panic, never serve a batch that fails its CRC, and never cut data
//!   that recovery accepted before;
//! - batches the broker's pre-append check (`validate_records`) used to accept although
//!   the decoder (`records`) refuses them, so no consumer could read them back (fixed in
//!   `src/protocol/batch.rs`).

mod common;

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use qwire::broker::log::{LogConfig, PartitionLog};
use qwire::protocol::batch::{check_batch, BatchHeader};
use qwire::protocol::{Acks, BatchBuilder, Compression, ErrorCode, ProducerStamp, Record, RecordBatch};
use rand::{Rng, SeedableRng};

fn small_batch(i: u32) -> (Bytes, BatchHeader) {
    let mut b = BatchBuilder::new();
    for r in 0..(i % 3 + 1) {
        b.push(&Record {
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: Some(Bytes::from(format!("k{r}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; 20 + (i as usize * 7) % 90])),
            headers: vec![],
        });
    }
    let bytes = b.seal(Compression::None, None, ProducerStamp::NONE);
    let h = check_batch(&bytes).unwrap().unwrap();
    (bytes, h)
}

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1024, index_interval_bytes: 256, ..LogConfig::default() }
}

/// Reads every offset; every batch served must pass its CRC. Returns false when a read
/// reported corruption (allowed for damaged sealed segments).
fn read_through(log: &PartitionLog) -> bool {
    let mut offset = log.log_start_offset();
    while offset < log.end_offset() {
        let Ok(bytes) = log.read(offset, 700) else { return false };
        let batches = RecordBatch::split_all(bytes).expect("served batches are whole and CRC-valid");
        let next = batches.last().expect("a read inside the log returns a batch").header().last_offset() + 1;
        assert!(next > offset);
        offset = next;
    }
    true
}

fn mutate(dir: &Path, rng: &mut rand::rngs::StdRng) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let f = &files[rng.gen_range(0..files.len())];
    let mut data = std::fs::read(f).unwrap();
    let name = f.file_name().unwrap().to_string_lossy().into_owned();
    let what = match rng.gen_range(0..6) {
        0 if !data.is_empty() => {
            let at = rng.gen_range(0..data.len());
            data[at] ^= 1 << rng.gen_range(0..8);
            format!("flip a bit at {at}")
        }
        1 if !data.is_empty() => {
            let at = rng.gen_range(0..data.len());
            data.truncate(at);
            format!("truncate at {at}")
        }
        2 => {
            let n = rng.gen_range(1..200);
            data.extend((0..n).map(|_| rng.gen::<u8>()));
            format!("append {n} random bytes")
        }
        3 if !data.is_empty() => {
            let at = rng.gen_range(0..data.len());
            let n = rng.gen_range(1..100).min(data.len() - at);
            data[at..at + n].fill(0);
            format!("zero {n} bytes at {at}")
        }
        4 => {
            std::fs::remove_file(f).unwrap();
            return format!("delete {name}");
        }
        _ if data.len() >= 8 => {
            let at = rng.gen_range(0..data.len() - 7);
            data[at..at + 8].copy_from_slice(&rng.gen::<i64>().to_be_bytes());
            format!("overwrite 8 bytes at {at}")
        }
        _ => "nothing".into(),
    };
    std::fs::write(f, &data).unwrap();
    format!("{name}: {what}")
}

#[test]
fn storage_recovery_survives_seeded_damage() {
    let template = tempfile::tempdir().unwrap();
    let (mut log, _) = PartitionLog::open(template.path(), config()).unwrap();
    for i in 0..40 {
        let (b, h) = small_batch(i);
        log.append(&b, &h).unwrap();
    }
    log.flush().unwrap();
    assert!(log.segment_count() >= 4);
    drop(log);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0051_5749_5245);
    let (mut opened, mut refused) = (0, 0);
    for round in 0..300 {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(template.path()).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        let damage: Vec<String> = (0..rng.gen_range(1..3)).map(|_| mutate(dir.path(), &mut rng)).collect();
        let Ok((mut log, _)) = PartitionLog::open(dir.path(), config()) else {
            refused += 1;
            continue;
        };
        opened += 1;
        let readable = read_through(&log);
        let (start, end) = (log.log_start_offset(), log.end_offset());
        let (b, h) = small_batch(round);
        let info = log.append(&b, &h).unwrap_or_else(|e| panic!("round {round} {damage:?}: append: {e}"));
        assert_eq!(info.base_offset, end, "round {round} {damage:?}");
        log.flush().unwrap();
        drop(log);
        let (log, report) = PartitionLog::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("round {round} {damage:?}: reopening what was accepted: {e}"));
        assert_eq!(report.truncated_bytes, 0, "round {round} {damage:?}: {report:?}");
        assert_eq!((log.log_start_offset(), log.end_offset()), (start, info.last_offset + 1), "round {round}");
        if readable {
            assert!(read_through(&log), "round {round} {damage:?}");
        }
    }
    println!("seeded recovery damage: {opened} logs opened, {refused} refused with an error");
    assert!(opened > 50 && refused > 10, "both outcomes exercised: {opened} / {refused}");
}

/// A batch of one record whose record body is `body` (length-prefixed here), with a
/// valid header and CRC.
fn raw_batch(body: &[u8]) -> Bytes {
    let mut section = BytesMut::new();
    // zig-zag varint of the body length (< 64 here: one byte)
    assert!(body.len() < 64);
    section.put_u8((body.len() as u8) << 1);
    section.put_slice(body);
    let mut b = BytesMut::new();
    b.put_i64(0);
    b.put_u32((45 + section.len()) as u32);
    b.put_u8(1);
    b.put_u32(0);
    b.put_u16(0);
    b.put_u32(0);
    b.put_i64(1_700_000_000_000);
    b.put_i64(1_700_000_000_000);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_u32(1);
    b.put_slice(&section);
    let crc = crc32c::crc32c(&b[17..]);
    b[13..17].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Record bodies the decoder refuses: a trailing byte after the headers, and a header key
/// that is not UTF-8. (attributes 0, timestamp delta 0, offset delta 0, no key, value "v".)
fn undecodable_batches() -> Vec<(&'static str, Bytes)> {
    vec![
        ("a byte after the record's headers", raw_batch(&[0, 0, 0, 1, 2, b'v', 0, 0xff])),
        ("a header key that is not UTF-8", raw_batch(&[0, 0, 0, 1, 2, b'v', 2, 2, 0xff, 1])),
    ]
}

#[test]
fn the_pre_append_check_refuses_what_the_decoder_refuses() {
    for (what, bytes) in undecodable_batches() {
        let batch = RecordBatch::from_bytes(bytes).unwrap();
        assert!(batch.records(1 << 20).is_err(), "{what}: records() refuses it");
        assert!(batch.validate_records(1 << 20).is_err(), "{what}: so must validate_records");
    }
}

#[test]
fn the_broker_refuses_batches_whose_records_do_not_decode() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let b = TestBroker::start().await;
        let mut c = b.client("alice").await;
        for (what, bytes) in undecodable_batches() {
            let r = c.produce("poison", 0, Acks::All, bytes).await.unwrap();
            assert_eq!(r.error, ErrorCode::CorruptBatch, "{what}: accepted at offset {}", r.base_offset);
        }
        // Whatever was stored can be read back.
        c.fetch_all("poison", 0, 0).await.expect("every stored batch decodes");
    });
}
