//! Reopening after clean closes, torn writes, corruption and lost indexes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::broker::log::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX};
use crate::protocol::batch::BATCH_HEADER_LEN;

#[test]
fn reopen_after_clean_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { index_interval_bytes: 200, ..config(1500) };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let mut appended = fill(&mut log, 80, 0);
    log.flush().unwrap();
    let (segments, size, end) = (log.segment_count(), log.size_bytes(), log.end_offset());
    drop(log);
    let (mut log, report) = open(dir.path(), cfg.clone());
    // Every sealed segment is trusted after the flush; only the newest is re-checked.
    assert_eq!(report, RecoveryReport { segments, batches: 80, segments_synced: 1, ..RecoveryReport::default() });
    assert_eq!((log.size_bytes(), log.end_offset(), log.log_start_offset()), (size, end, 0));
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
    assert_eq!(fs::metadata(&path).unwrap().len(), before - last_len as u64, "file really cut");
    assert_eq!(report.truncated_bytes, damaged - (before - last_len as u64));
    let reason = report.reason.clone().unwrap();
    assert!(reason.contains(expect_reason), "{reason}");
    assert!(reason.contains(&format!("position {}", before - last_len as u64)), "{reason}");
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
    let mut f = OpenOptions::new().append(true).open(newest_log(dir.path())).unwrap();
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
    log.flush().unwrap();
    drop(log);
    let first = segment_path(dir.path(), 0, LOG_SUFFIX);
    let mut data = fs::read(&first).unwrap();
    data[12] = 9; // magic of the first batch
    fs::write(&first, &data).unwrap();
    match PartitionLog::open(dir.path(), config(500)) {
        Err(LogError::Corrupt { path, position: 0, .. }) => assert_eq!(path, first),
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
    log.flush().unwrap();
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
    let cfg = LogConfig { index_interval_bytes: 100, ..config(1000) };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let appended = fill(&mut log, 40, 0);
    let (sealed_base, active_base) = (log.sealed[0].base_offset(), log.active.base_offset());
    drop(log);
    let sealed_index = segment_path(dir.path(), sealed_base, INDEX_SUFFIX);
    let active_index = segment_path(dir.path(), active_base, INDEX_SUFFIX);
    let (want_sealed, want_active) = (fs::read(&sealed_index).unwrap(), fs::read(&active_index).unwrap());
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
    let cfg = LogConfig { index_interval_bytes: 250, ..config(3000) };
    let (mut log, _) = open(dir.path(), cfg.clone());
    fill(&mut log, 120, 0);
    log.flush().unwrap();
    assert!(log.segment_count() >= 3);
    assert!(log.active.index_entries_for_test() > 2);
    let indexes = |dir: &Path| {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        files.sort();
        files.into_iter().map(|p| (p.file_name().unwrap().to_owned(), fs::read(&p).unwrap())).collect::<Vec<_>>()
    };
    let written = indexes(dir.path());
    drop(log);
    // What appends wrote, byte for byte, is what a rebuild from the log writes.
    for (name, _) in &written {
        fs::remove_file(dir.path().join(name)).unwrap();
    }
    let (_, report) = open(dir.path(), cfg.clone());
    assert_eq!(report.indexes_rebuilt, written.len());
    let rebuilt = indexes(dir.path());
    assert_eq!(rebuilt, written);
    assert!(written.iter().all(|(_, bytes)| bytes.len() >= 8 && bytes.len() % 8 == 0));
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
    for stray in ["garbage.log", "12.log", "notes.txt", "00000000000000000099.index"] {
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
    assert_eq!(log.sealed.iter().map(|s| s.max_timestamp()).collect::<Vec<_>>(), before);
}

#[test]
fn open_fsyncs_the_unsynced_tail_it_declares_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config(700));
    fill(&mut log, 10, 0);
    drop(log); // a crash: the newest batches are only in the page cache
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let syncer = crate::broker::disk::Syncer::with_hook(move |p, k| {
        record.lock().unwrap().push((p.to_path_buf(), k));
        Ok(())
    });
    let (log, _) = PartitionLog::open_with(dir.path(), config(700), syncer).unwrap();
    let seen = seen.lock().unwrap().clone();
    let newest = newest_log(dir.path());
    assert!(seen.iter().any(|(p, _)| *p == newest), "the newest segment was never fsync'd: {seen:?}");
    assert!(seen.iter().any(|(p, k)| p == dir.path() && *k == crate::broker::disk::SyncKind::Dir), "{seen:?}");
    assert!(log.end_offset() > 0);
}
