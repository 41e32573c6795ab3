//! Retention by size and by age.

use std::time::Duration;

use super::*;
use crate::broker::log::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX};

#[test]
fn retention_by_size_deletes_oldest_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { retention_bytes: Some(2000), ..config(600) };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let appended = fill(&mut log, 40, 0);
    log.flush().unwrap();
    let before = log.segment_count();
    let deleted = log.apply_retention(0).unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    assert!(log.size_bytes() <= 2000);
    assert_eq!(log.size_bytes(), log.sealed.iter().map(|s| s.size()).sum::<u64>() + log.active.size());
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(!segment_path(dir.path(), 0, LOG_SUFFIX).exists());
    assert!(!segment_path(dir.path(), 0, INDEX_SUFFIX).exists());
    let kept: Vec<_> = appended.iter().copied().filter(|&(b, _)| b >= start).collect();
    assert_eq!(kept.first().unwrap().0, start, "segments are whole batches");
    assert_batches(&log, &kept);
    assert!(matches!(log.read(start - 1, 10), Err(LogError::OffsetOutOfRange { .. })));
    assert!(matches!(log.read(0, 10), Err(LogError::OffsetOutOfRange { .. })));
    assert_eq!(log.apply_retention(0).unwrap(), 0);
    drop(log);
    let (log, _) = open(dir.path(), cfg);
    assert_eq!(log.log_start_offset(), start);
    assert_batches(&log, &kept);
}

#[test]
fn retention_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        open(dir.path(), LogConfig { retention_bytes: Some(0), retention: Some(Duration::ZERO), ..config(400) });
    fill(&mut log, 20, 0);
    log.flush().unwrap();
    log.apply_retention(i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.active.base_offset());
    assert!(log.active.size() > 0);
    assert!(!log.read(log.log_start_offset(), 1).unwrap().is_empty());
}

#[test]
fn retention_by_age_deletes_expired_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { retention: Some(Duration::from_secs(10)), ..config(500) };
    let (mut log, _) = open(dir.path(), cfg);
    // Batch i has timestamps around i * 1000 ms.
    for i in 0..30i64 {
        let (bytes, h) = batch(2, i * 1000, 40);
        log.append(&bytes, &h).unwrap();
    }
    log.flush().unwrap();
    let segments = log.segment_count();
    assert!(segments > 5);
    // Nothing is older than 10 s at t = 12 s.
    assert_eq!(log.apply_retention(12_000).unwrap(), 0);
    // At t = 25 s, batches whose max_timestamp < 15 s are expired: delete every segment
    // that holds only those, and nothing after the first one that does not.
    let expired: Vec<i64> =
        log.sealed.iter().take_while(|s| s.max_timestamp().unwrap() < 15_000).map(|s| s.base_offset()).collect();
    assert!(!expired.is_empty());
    assert_eq!(log.apply_retention(25_000).unwrap(), expired.len());
    assert_eq!(log.segment_count(), segments - expired.len());
    assert!(log.sealed.front().unwrap().max_timestamp().unwrap() >= 15_000);
    assert!(log.log_start_offset() > *expired.last().unwrap());
    for base in expired {
        assert!(!segment_path(dir.path(), base, LOG_SUFFIX).exists());
    }
    assert!(matches!(log.read(0, 1), Err(LogError::OffsetOutOfRange { start, .. }) if start == log.log_start_offset()));
}

#[test]
fn retention_stops_at_the_first_segment_not_wholly_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        open(dir.path(), LogConfig { retention_bytes: Some(0), retention: Some(Duration::ZERO), ..config(400) });
    fill(&mut log, 10, 0);
    log.flush().unwrap();
    let durable = log.durable_offset();
    fill(&mut log, 10, 0);
    let durable_segments = log.sealed.iter().filter(|s| s.next_offset() <= durable).count();
    assert!(durable_segments >= 2 && log.sealed.len() > durable_segments + 1);
    // Only the segments wholly below the durable point go, by age and by size alike.
    assert_eq!(log.apply_retention(i64::MAX).unwrap(), durable_segments);
    assert!(log.log_start_offset() <= durable);
    assert_eq!(log.apply_retention(i64::MAX).unwrap(), 0);
    log.flush().unwrap();
    assert!(log.apply_retention(i64::MAX).unwrap() > 0);
    assert_eq!(log.segment_count(), 1);
}
