//! Tests of the partition log against real files in a temporary directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX};
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
    LogConfig {
        segment_bytes,
        ..LogConfig::default()
    }
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
    let got_offsets: Vec<(i64, u32)> = got
        .iter()
        .map(|b| (b.header().base_offset, b.header().record_count))
        .collect();
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
    assert_eq!(
        report,
        RecoveryReport {
            segments: 1,
            ..RecoveryReport::default()
        }
    );
    assert_eq!((log.log_start_offset(), log.end_offset()), (0, 0));
    let appended = fill(&mut log, 200, 1000);
    let mut next = 0;
    for &(base, n) in &appended {
        assert_eq!(base, next);
        next += i64::from(n);
    }
    assert_eq!(log.end_offset(), next);
    assert_batches(&log, &appended);
    assert_eq!(
        log.size_bytes(),
        fs::metadata(newest_log(dir.path())).unwrap().len()
    );
}

#[test]
fn offsets_stay_contiguous_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(
        dir.path(),
        LogConfig {
            index_interval_bytes: 300,
            ..config(1000)
        },
    );
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
            let first = RecordBatch::split_all(Bytes::from(data)).unwrap()[0]
                .header()
                .base_offset;
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
    assert_eq!(
        (info.segment_base_offset, info.position, info.base_offset),
        (3, 0, 3)
    );
    assert_batches(&log, &[(0, 3), (3, 1)]);
}

#[test]
fn read_from_the_middle_of_a_batch_returns_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    // Index every batch in one run, never in the other: both must find the batch.
    for interval in [0, 1 << 30] {
        let sub = dir.path().join(interval.to_string());
        let (mut log, _) = open(
            &sub,
            LogConfig {
                index_interval_bytes: interval,
                ..config(2000)
            },
        );
        let appended = fill(&mut log, 60, 0);
        for &(base, n) in &appended {
            for offset in base..base + i64::from(n) {
                let got = log.read(offset, 1).unwrap();
                let b = RecordBatch::from_bytes(got).unwrap();
                assert_eq!(
                    (b.header().base_offset, b.header().record_count),
                    (base, n),
                    "offset {offset}"
                );
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
            Err(LogError::OffsetOutOfRange {
                requested,
                start: 0,
                end: e,
            }) => {
                assert_eq!((requested, e), (bad, end));
            }
            other => panic!("offset {bad}: {other:?}"),
        }
    }
}

#[test]
fn reopen_after_clean_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 200,
        ..config(1500)
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let mut appended = fill(&mut log, 80, 0);
    log.flush().unwrap();
    let (segments, size, end) = (log.segment_count(), log.size_bytes(), log.end_offset());
    drop(log);
    let (mut log, report) = open(dir.path(), cfg.clone());
    assert_eq!(
        report,
        RecoveryReport {
            segments,
            batches: 80,
            truncated_bytes: 0,
            reason: None,
            indexes_rebuilt: 0
        }
    );
    assert_eq!(
        (log.size_bytes(), log.end_offset(), log.log_start_offset()),
        (size, end, 0)
    );
    assert_batches(&log, &appended);
    appended.extend(fill(&mut log, 20, 0));
    assert_eq!(appended[80].0, end);
    drop(log);
    let (log, _) = open(dir.path(), cfg);
    assert_batches(&log, &appended);
}

/// Appends 10 batches over several segments, damages the newest segment with `damage`
/// (given the file and the last batch's length), reopens and checks that exactly the last
/// batch and whatever followed it is gone and that appends continue after batch 9.
fn check_tail_recovery(damage: impl FnOnce(&Path, usize), expect_reason: &str) -> RecoveryReport {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(700);
    let (mut log, _) = open(dir.path(), cfg.clone());
    let appended = fill(&mut log, 10, 0);
    let last_len = log.read(appended[9].0, 1).unwrap().len();
    assert!(log.segment_count() > 2);
    drop(log);
    let path = newest_log(dir.path());
    let before = fs::metadata(&path).unwrap().len();
    damage(&path, last_len);
    let damaged = fs::metadata(&path).unwrap().len();
    let (mut log, report) = open(dir.path(), cfg);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        before - last_len as u64,
        "file really cut"
    );
    assert_eq!(report.truncated_bytes, damaged - (before - last_len as u64));
    let reason = report.reason.clone().unwrap();
    assert!(reason.contains(expect_reason), "{reason}");
    assert!(
        reason.contains(&format!("position {}", before - last_len as u64)),
        "{reason}"
    );
    assert_eq!(log.end_offset(), appended[9].0);
    assert_batches(&log, &appended[..9]);
    let mut expected = appended[..9].to_vec();
    expected.extend(fill(&mut log, 5, 0));
    assert_eq!(expected[9].0, appended[9].0);
    drop(log);
    let (log, report2) = open(dir.path(), config(700));
    assert_eq!(report2.truncated_bytes, 0);
    assert_batches(&log, &expected);
    report
}

#[test]
fn torn_last_batch_is_cut_on_reopen() {
    let report = check_tail_recovery(
        |path, last_len| {
            let len = fs::metadata(path).unwrap().len();
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len - (last_len as u64) / 2).unwrap();
        },
        "unexpected end of input",
    );
    assert!(report.truncated_bytes > 0);
}

#[test]
fn torn_header_is_cut_on_reopen() {
    check_tail_recovery(
        |path, last_len| {
            let len = fs::metadata(path).unwrap().len();
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len - last_len as u64 + 20).unwrap();
        },
        "unexpected end of input",
    );
}

#[test]
fn garbage_after_a_torn_batch_is_cut_on_reopen() {
    check_tail_recovery(
        |path, last_len| {
            let len = fs::metadata(path).unwrap().len();
            let mut f = OpenOptions::new().append(true).open(path).unwrap();
            f.set_len(len - 10 - last_len as u64 / 2).unwrap();
            f.write_all(&[0xab; 100]).unwrap();
        },
        "position",
    );
}

#[test]
fn zero_filled_tail_is_cut_on_reopen() {
    check_tail_recovery(
        |path, last_len| {
            let len = fs::metadata(path).unwrap().len();
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len - last_len as u64).unwrap();
            f.set_len(len + 4096).unwrap();
        },
        "magic",
    );
}

#[test]
fn flipped_bit_in_last_batch_is_cut_on_reopen() {
    let report = check_tail_recovery(
        |path, last_len| {
            let mut data = fs::read(path).unwrap();
            // Inside the records section of the last batch (not its header).
            assert!(last_len > BATCH_HEADER_LEN + 5);
            let at = data.len() - 5;
            data[at] ^= 0x10;
            fs::write(path, data).unwrap();
        },
        "CRC mismatch",
    );
    assert_eq!(report.batches, 9);
}

#[test]
fn garbage_appended_after_the_last_batch_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let appended = fill(&mut log, 5, 0);
    drop(log);
    let path = newest_log(dir.path());
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    let junk = b"definitely not a record batch, just trailing junk bytes";
    f.write_all(junk).unwrap();
    let (log, report) = open(dir.path(), LogConfig::default());
    assert_eq!(report.truncated_bytes, junk.len() as u64);
    assert_eq!(report.batches, 5);
    assert_batches(&log, &appended);
}

#[test]
fn offset_gap_in_newest_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let appended = fill(&mut log, 3, 0);
    drop(log);
    // A valid batch whose offset does not follow: not something this log writes.
    let (mut stray, _) = batch(1, 0, 10);
    let mut raw = stray.to_vec();
    crate::protocol::batch::stamp_base_offset(&mut raw, 1000);
    stray = Bytes::from(raw);
    let mut f = OpenOptions::new()
        .append(true)
        .open(newest_log(dir.path()))
        .unwrap();
    f.write_all(&stray).unwrap();
    let (log, report) = open(dir.path(), LogConfig::default());
    assert_eq!(report.truncated_bytes, stray.len() as u64);
    assert!(report.reason.unwrap().contains("base offset 1000"));
    assert_batches(&log, &appended);
}

#[test]
fn corruption_in_a_sealed_segment_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(500));
    fill(&mut log, 20, 0);
    drop(log);
    let first = segment_path(dir.path(), 0, LOG_SUFFIX);
    let mut data = fs::read(&first).unwrap();
    data[12] = 9; // magic of the first batch
    fs::write(&first, &data).unwrap();
    match PartitionLog::open(dir.path(), config(500)) {
        Err(LogError::Corrupt {
            path, position: 0, ..
        }) => assert_eq!(path, first),
        other => panic!("{other:?}"),
    }
    // Nothing was cut.
    assert_eq!(fs::read(&first).unwrap(), data);
}

#[test]
fn missing_middle_segment_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(500));
    fill(&mut log, 30, 0);
    let middle = log.sealed[1].base_offset();
    drop(log);
    fs::remove_file(segment_path(dir.path(), middle, LOG_SUFFIX)).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), config(500)),
        Err(LogError::OffsetMismatch { expected, .. }) if expected == middle
    ));
}

#[test]
fn deleted_or_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 100,
        ..config(1000)
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let appended = fill(&mut log, 40, 0);
    let (sealed_base, active_base) = (log.sealed[0].base_offset(), log.active.base_offset());
    drop(log);
    let sealed_index = segment_path(dir.path(), sealed_base, INDEX_SUFFIX);
    let active_index = segment_path(dir.path(), active_base, INDEX_SUFFIX);
    let (want_sealed, want_active) = (
        fs::read(&sealed_index).unwrap(),
        fs::read(&active_index).unwrap(),
    );
    assert!(want_sealed.len() >= 16 && want_sealed.len() % 8 == 0);
    fs::remove_file(&sealed_index).unwrap();
    fs::write(&active_index, &want_active[..want_active.len() - 3]).unwrap();
    let (log, report) = open(dir.path(), cfg);
    assert_eq!(report.indexes_rebuilt, 2);
    assert_eq!(fs::read(&sealed_index).unwrap(), want_sealed);
    assert_eq!(fs::read(&active_index).unwrap(), want_active);
    assert_batches(&log, &appended);
}

#[test]
fn index_written_while_appending_matches_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 250,
        ..LogConfig::default()
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    fill(&mut log, 50, 0);
    log.flush().unwrap();
    let entries = log.active.index_entries_for_test();
    assert!(entries > 5);
    drop(log);
    let (_, report) = open(dir.path(), cfg);
    assert_eq!(report.indexes_rebuilt, 0);
}

#[test]
fn empty_newest_segment_and_foreign_files_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let mut appended = fill(&mut log, 4, 0);
    let end = log.end_offset();
    drop(log);
    fs::File::create(segment_path(dir.path(), end, LOG_SUFFIX)).unwrap();
    for stray in [
        "garbage.log",
        "12.log",
        "notes.txt",
        "00000000000000000099.index",
    ] {
        fs::write(dir.path().join(stray), b"x").unwrap();
    }
    let (mut log, report) = open(dir.path(), LogConfig::default());
    assert_eq!((report.segments, report.truncated_bytes), (2, 0));
    assert_eq!(log.end_offset(), end);
    appended.extend(fill(&mut log, 2, 0));
    assert_eq!(log.active.base_offset(), end);
    assert_batches(&log, &appended);
}

#[test]
fn retention_by_size_deletes_oldest_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(2000),
        ..config(600)
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let appended = fill(&mut log, 40, 0);
    let before = log.segment_count();
    let deleted = log.apply_retention(0).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    assert!(log.size_bytes() <= 2000);
    assert_eq!(
        log.size_bytes(),
        log.sealed.iter().map(|s| s.size()).sum::<u64>() + log.active.size()
    );
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(!segment_path(dir.path(), 0, LOG_SUFFIX).exists());
    assert!(!segment_path(dir.path(), 0, INDEX_SUFFIX).exists());
    let kept: Vec<_> = appended
        .iter()
        .copied()
        .filter(|&(b, _)| b >= start)
        .collect();
    assert_eq!(kept.first().unwrap().0, start, "segments are whole batches");
    assert_batches(&log, &kept);
    assert!(matches!(
        log.read(start - 1, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(0, 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.apply_retention(0).unwrap(), 0);
    drop(log);
    let (log, _) = open(dir.path(), cfg);
    assert_eq!(log.log_start_offset(), start);
    assert_batches(&log, &kept);
}

#[test]
fn retention_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(0),
            retention: Some(Duration::ZERO),
            ..config(400)
        },
    );
    fill(&mut log, 20, 0);
    log.apply_retention(i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.active.base_offset());
    assert!(log.active.size() > 0);
    assert!(!log.read(log.log_start_offset(), 1).unwrap().is_empty());
}

#[test]
fn retention_by_age_deletes_expired_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention: Some(Duration::from_secs(10)),
        ..config(500)
    };
    let (mut log, _) = open(dir.path(), cfg);
    // Batch i has timestamps around i * 1000 ms.
    for i in 0..30i64 {
        let (bytes, h) = batch(2, i * 1000, 40);
        log.append(&bytes, &h).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 5);
    // Nothing is older than 10 s at t = 12 s.
    assert_eq!(log.apply_retention(12_000).unwrap(), 0);
    // At t = 25 s, batches whose max_timestamp < 15 s are expired: delete every segment
    // that holds only those, and nothing after the first one that does not.
    let expired: Vec<i64> = log
        .sealed
        .iter()
        .take_while(|s| s.max_timestamp().unwrap() < 15_000)
        .map(|s| s.base_offset())
        .collect();
    assert!(!expired.is_empty());
    assert_eq!(log.apply_retention(25_000).unwrap(), expired.len());
    assert_eq!(log.segment_count(), segments - expired.len());
    assert!(log.sealed.front().unwrap().max_timestamp().unwrap() >= 15_000);
    assert!(log.log_start_offset() > *expired.last().unwrap());
    for base in expired {
        assert!(!segment_path(dir.path(), base, LOG_SUFFIX).exists());
    }
    assert!(
        matches!(log.read(0, 1), Err(LogError::OffsetOutOfRange { start, .. }) if start == log.log_start_offset())
    );
}

#[test]
fn max_timestamp_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(500);
    let (mut log, _) = open(dir.path(), cfg.clone());
    for i in (0..10i64).rev() {
        let (bytes, h) = batch(1, i * 1000, 40);
        log.append(&bytes, &h).unwrap();
    }
    let before: Vec<_> = log.sealed.iter().map(|s| s.max_timestamp()).collect();
    drop(log);
    let (log, _) = open(dir.path(), cfg);
    assert_eq!(
        log.sealed
            .iter()
            .map(|s| s.max_timestamp())
            .collect::<Vec<_>>(),
        before
    );
}

#[test]
fn for_each_header_visits_all_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(800));
    let mut appended = Vec::new();
    for i in 0..25i32 {
        let mut b = BatchBuilder::new();
        b.push(&Record {
            timestamp: 5,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
        });
        let stamp = ProducerStamp {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: i,
        };
        let bytes = b.seal(Compression::None, None, stamp);
        let h = check_batch(&bytes).unwrap().unwrap();
        appended.push(log.append(&bytes, &h).unwrap().base_offset);
    }
    log.apply_retention(0).unwrap();
    let mut seen = Vec::new();
    log.for_each_header(|h| seen.push((h.base_offset, h.producer.base_sequence)))
        .unwrap();
    let want: Vec<_> = appended
        .iter()
        .enumerate()
        .map(|(i, &o)| (o, i as i32))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn sync_target_covers_the_end_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(500));
    fill(&mut log, 20, 0);
    let (file, end) = log.sync_target();
    assert_eq!(end, log.end_offset());
    file.sync_data().unwrap();
    assert_eq!(file.metadata().unwrap().len(), log.active.size());
    log.flush().unwrap();
}

#[test]
fn append_rejects_bytes_that_do_not_match_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), LogConfig::default());
    let (bytes, h) = batch(1, 0, 10);
    let err = log.append(&bytes[..bytes.len() - 1], &h).unwrap_err();
    assert!(matches!(err, LogError::InvalidBatch { .. }), "{err}");
    assert!(matches!(
        log.append(&[], &h),
        Err(LogError::InvalidBatch { .. })
    ));
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
    assert!(
        msg.contains("create partition directory") && msg.contains("not-a-dir"),
        "{msg}"
    );
    assert!(std::error::Error::source(&err).is_some());
}
