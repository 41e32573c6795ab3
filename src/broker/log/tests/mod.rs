//! Tests of the partition log against real files in a temporary directory: appends and
//! reads here, crash recovery in [`recovery`], retention in [`retention`].

mod recovery;
mod retention;

use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::segment::{segment_path, LOG_SUFFIX};
use super::*;
use crate::protocol::batch::check_batch;
use crate::protocol::{BatchBuilder, Compression, ProducerStamp, Record, RecordBatch};

/// A sealed batch of `n` records with timestamps from `ts`, each value `value_len` bytes.
fn batch(n: u32, ts: i64, value_len: usize) -> (Bytes, BatchHeader) {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Record {
            timestamp: ts + i64::from(i),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![i as u8; value_len])),
            headers: vec![],
        });
    }
    let bytes = b.seal(Compression::None, None, ProducerStamp::NONE);
    let header = check_batch(&bytes).unwrap().unwrap();
    (bytes, header)
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, ..LogConfig::default() }
}

fn open(dir: &Path, config: LogConfig) -> (PartitionLog, RecoveryReport) {
    PartitionLog::open(dir, config).unwrap()
}

/// Appends `count` batches of 1 to 3 records; returns their (base offset, record count).
fn fill(log: &mut PartitionLog, count: usize, ts: i64) -> Vec<(i64, u32)> {
    (0..count)
        .map(|i| {
            let n = (i % 3) as u32 + 1;
            let (bytes, h) = batch(n, ts + i as i64, 40);
            let info = log.append(&bytes, &h).unwrap();
            assert_eq!(info.last_offset, info.base_offset + i64::from(n) - 1);
            (info.base_offset, n)
        })
        .collect()
}

/// Every batch from the log start to the end, fetching again at segment ends.
fn read_all(log: &PartitionLog) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.end_offset() {
        let got = log.read(offset, 1 << 20).unwrap();
        assert!(!got.is_empty());
        let batches = RecordBatch::split_all(got).unwrap();
        offset = batches.last().unwrap().header().last_offset() + 1;
        out.extend(batches);
    }
    assert_eq!(log.read(offset, 1 << 20).unwrap(), Bytes::new());
    out
}

/// Asserts the stored batches are exactly `expected` (base offset, record count) and
/// that every record decodes with its offset.
fn assert_batches(log: &PartitionLog, expected: &[(i64, u32)]) {
    let got = read_all(log);
    let got_offsets: Vec<(i64, u32)> = got.iter().map(|b| (b.header().base_offset, b.header().record_count)).collect();
    assert_eq!(got_offsets, expected);
    for b in &got {
        let records = b.records(1 << 20).unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, b.header().base_offset + i as i64);
        }
    }
}

fn newest_log(dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn append_and_read_round_trip_with_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open(dir.path(), LogConfig::default());
    assert_eq!(report, RecoveryReport { segments: 1, ..RecoveryReport::default() });
    assert_eq!((log.log_start_offset(), log.end_offset()), (0, 0));
    let appended = fill(&mut log, 200, 1000);
    let mut next = 0;
    for &(base, n) in &appended {
        assert_eq!(base, next);
        next += i64::from(n);
    }
    assert_eq!(log.end_offset(), next);
    assert_batches(&log, &appended);
    assert_eq!(log.size_bytes(), fs::metadata(newest_log(dir.path())).unwrap().len());
}

#[test]
fn offsets_stay_contiguous_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig { index_interval_bytes: 300, ..config(1000) });
    let appended = fill(&mut log, 100, 1000);
    assert!(log.segment_count() > 10, "{} segments", log.segment_count());
    assert_batches(&log, &appended);
    // Every segment is named after its first batch and stays within segment_bytes.
    let (bytes, _) = batch(1, 0, 40);
    for entry in fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let data = fs::read(&path).unwrap();
            assert!(data.len() as u64 <= 1000 || data.len() <= bytes.len() * 3);
            let first = RecordBatch::split_all(Bytes::from(data)).unwrap()[0].header().base_offset;
            assert_eq!(path, segment_path(dir.path(), first, LOG_SUFFIX));
        }
    }
}

#[test]
fn oversized_batch_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(200));
    let (big, big_h) = batch(3, 0, 300);
    let (small, small_h) = batch(1, 0, 10);
    assert!(!log.append(&big, &big_h).unwrap().rolled);
    let info = log.append(&small, &small_h).unwrap();
    assert!(info.rolled);
    assert_eq!((info.segment_base_offset, info.position, info.base_offset), (3, 0, 3));
    assert_batches(&log, &[(0, 3), (3, 1)]);
}

#[test]
fn read_from_the_middle_of_a_batch_returns_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Index every batch in one run, never in the other: both must find the batch.
    for interval in [0, 1 << 30] {
        let sub = dir.path().join(interval.to_string());
        let (mut log, _) = open(&sub, LogConfig { index_interval_bytes: interval, ..config(2000) });
        let appended = fill(&mut log, 60, 0);
        for &(base, n) in &appended {
            for offset in base..base + i64::from(n) {
                let got = log.read(offset, 1).unwrap();
                let b = RecordBatch::from_bytes(got).unwrap();
                assert_eq!((b.header().base_offset, b.header().record_count), (base, n), "offset {offset}");
            }
        }
    }
}

#[test]
fn read_honours_max_bytes_but_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let (bytes, h) = batch(2, 0, 50);
    for _ in 0..10 {
        log.append(&bytes, &h).unwrap();
    }
    let one = bytes.len();
    assert_eq!(log.read(0, 0).unwrap().len(), one);
    assert_eq!(log.read(0, one - 1).unwrap().len(), one);
    assert_eq!(log.read(0, one).unwrap().len(), one);
    assert_eq!(log.read(0, 3 * one + one / 2).unwrap().len(), 3 * one);
    assert_eq!(log.read(4, 3 * one).unwrap().len(), 3 * one);
    assert_eq!(log.read(0, usize::MAX).unwrap().len(), 10 * one);
    // The stored offset is stamped, the rest is byte for byte what was appended.
    let third = log.read(5, 1).unwrap();
    assert_eq!(&third[..8], &4i64.to_be_bytes());
    assert_eq!(&third[8..], &bytes[8..]);
}

#[test]
fn reads_outside_the_log_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    fill(&mut log, 3, 0);
    let end = log.end_offset();
    assert_eq!(log.read(end, 100).unwrap(), Bytes::new());
    for bad in [-1, end + 1, i64::MAX, i64::MIN] {
        match log.read(bad, 100) {
            Err(LogError::OffsetOutOfRange { requested, start: 0, end: e }) => {
                assert_eq!((requested, e), (bad, end));
            }
            other => panic!("offset {bad}: {other:?}"),
        }
    }
}

#[test]
fn for_each_header_visits_all_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(800));
    let mut appended = Vec::new();
    for i in 0..25i32 {
        let mut b = BatchBuilder::new();
        b.push(&Record { timestamp: 5, key: None, value: Some(Bytes::from_static(b"v")), headers: vec![] });
        let stamp = ProducerStamp { producer_id: 7, producer_epoch: 0, base_sequence: i };
        let bytes = b.seal(Compression::None, None, stamp);
        let h = check_batch(&bytes).unwrap().unwrap();
        appended.push(log.append(&bytes, &h).unwrap().base_offset);
    }
    log.apply_retention(0).unwrap();
    let mut seen = Vec::new();
    log.for_each_header(|h| seen.push((h.base_offset, h.producer.base_sequence))).unwrap();
    let want: Vec<_> = appended.iter().enumerate().map(|(i, &o)| (o, i as i32)).collect();
    assert_eq!(seen, want);
}

#[test]
fn a_sync_plan_covers_unsynced_sealed_segments_then_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(500));
    assert!(log.sync_plan().is_none(), "a freshly opened log is durable");
    fill(&mut log, 20, 0);
    assert!(log.segment_count() >= 3);
    assert_eq!(log.durable_offset(), 0, "rolls do not fsync");
    // Reads bounded by durability see nothing yet.
    assert!(log.read_plan(0, 1 << 20, ReadBound::Durable).unwrap().is_none());
    let plan = log.sync_plan().unwrap();
    assert!(plan.includes_sealed());
    assert_eq!(plan.end(), log.end_offset());
    // More appends while the plan runs outside the lock are not covered by it.
    fill(&mut log, 3, 0);
    let done = plan.run().unwrap();
    log.synced(&done);
    assert_eq!(log.durable_offset(), done.end());
    assert!(log.durable_offset() < log.end_offset());
    assert_eq!(log.recovery_point(), done.end());
    let f = log.read_plan(log.durable_offset() - 1, 1 << 20, ReadBound::Durable).unwrap().unwrap().read().unwrap();
    let last = RecordBatch::split_all(f).unwrap().last().unwrap().header().last_offset();
    assert_eq!(last + 1, log.durable_offset(), "a durable read stops at the durable point");
    let next = log.sync_plan().unwrap();
    assert!(!next.includes_sealed() || log.segment_count() > 3);
    log.flush().unwrap();
    assert!(log.sync_plan().is_none());
    assert_eq!(log.durable_offset(), log.end_offset());
}

#[test]
fn a_cut_to_the_durable_point_removes_the_segments_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(500));
    let mut appended = fill(&mut log, 10, 0);
    log.flush().unwrap();
    let durable = log.end_offset();
    fill(&mut log, 20, 0);
    let segments = log.segment_count();
    assert!(segments >= 4);
    log.mark_failed("a failed fsync");
    assert_eq!(log.cut_to_durable().unwrap(), durable);
    drop(log);
    let (mut log, report) = open(dir.path(), config(500));
    assert_eq!(report.truncated_bytes, 0);
    assert!(log.segment_count() < segments);
    assert_eq!(log.end_offset(), durable);
    assert_batches(&log, &appended);
    appended.extend(fill(&mut log, 2, 0));
    assert_batches(&log, &appended);
}

/// Found by the full-disk fault test: the first recovery attempt truncated the segment but
/// its fsync failed (the disk was still full); every later attempt then looked for the cut
/// offset's position in the already-truncated file ("failed to fill whole buffer") and the
/// partition never became writable again. A failed cut must be retryable.
#[test]
fn a_cut_whose_fsync_failed_can_be_retried() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let failing = std::sync::Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let syncer = crate::broker::disk::Syncer::with_hook(move |_, _| {
        if f.load(SeqCst) {
            Err(std::io::Error::other("injected: no space left"))
        } else {
            Ok(())
        }
    });
    let (mut log, _) = PartitionLog::open_with(dir.path(), config(500), syncer).unwrap();
    let appended = fill(&mut log, 10, 0);
    log.flush().unwrap();
    let durable = log.end_offset();
    fill(&mut log, 3, 0);
    log.mark_failed("a failed fsync");
    failing.store(true, SeqCst);
    assert!(log.cut_to_durable().is_err());
    assert!(log.cut_to_durable().is_err(), "still failing");
    failing.store(false, SeqCst);
    assert_eq!(log.cut_to_durable().unwrap(), durable);
    drop(log);
    let (log, _) = open(dir.path(), config(500));
    assert_eq!(log.end_offset(), durable);
    assert_batches(&log, &appended);
}

#[test]
fn append_rejects_bytes_that_do_not_match_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let (bytes, h) = batch(1, 0, 10);
    let err = log.append(&bytes[..bytes.len() - 1], &h).unwrap_err();
    assert!(matches!(err, LogError::InvalidBatch { .. }), "{err}");
    assert!(matches!(log.append(&[], &h), Err(LogError::InvalidBatch { .. })));
    assert_eq!((log.end_offset(), log.size_bytes()), (0, 0));
    log.append(&bytes, &h).unwrap();
    assert_eq!(log.end_offset(), 1);
}

#[test]
fn errors_name_the_operation_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let err = PartitionLog::open(&file.join("p0"), LogConfig::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("create partition directory") && msg.contains("not-a-dir"), "{msg}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_failed_log_refuses_writes_but_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let appended = fill(&mut log, 3, 0);
    log.failed = Some("a failed fsync");
    let (bytes, h) = batch(1, 0, 10);
    let err = log.append(&bytes, &h).unwrap_err();
    assert!(matches!(err, LogError::Unwritable { .. }), "{err}");
    assert!(err.to_string().contains("a failed fsync"), "{err}");
    assert!(matches!(log.flush(), Err(LogError::Unwritable { .. })));
    assert_batches(&log, &appended);
    drop(log);
    let (mut log, _) = open(dir.path(), LogConfig::default());
    log.append(&bytes, &h).unwrap();
}

#[test]
fn a_batch_damaged_on_disk_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(500));
    let appended = fill(&mut log, 20, 0);
    assert!(log.segment_count() >= 3);
    // Flip a bit in the records of the second batch of the first (sealed) segment and of
    // the last batch (active segment), behind the open log's back.
    let flip = |path: &Path, pos: usize| {
        let mut data = fs::read(path).unwrap();
        data[pos] ^= 0x10;
        fs::write(path, &data).unwrap();
    };
    let first = segment_path(dir.path(), 0, LOG_SUFFIX);
    let second_batch = appended[1];
    let pos = batch(1, 0, 40).0.len(); // the first batch holds 1 record
    flip(&first, pos + BATCH_HEADER_LEN + 3);
    let active = newest_log(dir.path());
    let last = *appended.last().unwrap();
    let len = fs::metadata(&active).unwrap().len() as usize;
    flip(&active, len - 2);
    // A read from the start stops before the damaged batch; a read at it is an error.
    let got = RecordBatch::split_all(log.read(0, 1 << 20).unwrap()).unwrap();
    assert_eq!(got.len(), 1);
    for offset in [second_batch.0, second_batch.0 + 1, last.0] {
        match log.read(offset, 1 << 20) {
            Err(LogError::Corrupt { source: DecodeError::CrcMismatch { .. }, .. }) => {}
            other => panic!("offset {offset}: {other:?}"),
        }
    }
    // Batches between the two are served.
    let after = appended[2].0;
    assert!(!log.read(after, 1 << 20).unwrap().is_empty());
}

/// Finding 3: a roll used to fsync the segment it closed (and the directory) inside the
/// append, i.e. in the request path. The next sync round does it now.
#[test]
fn appends_and_rolls_make_no_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let syncer = crate::broker::disk::Syncer::with_hook(move |_, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    });
    let (mut log, _) = PartitionLog::open_with(dir.path(), config(500), syncer).unwrap();
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    let appended = fill(&mut log, 30, 0);
    assert!(log.segment_count() >= 4);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), before, "an append or a roll fsync'd");
    log.flush().unwrap();
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) > before);
    assert_batches(&log, &appended);
}
