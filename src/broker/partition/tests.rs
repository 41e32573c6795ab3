//! The partition against real files, with an injectable fsync: what an acks=all waiter
//! and a consumer see while an fsync is pending, when it fails and across the cut that
//! follows; where the roll fsync happens; and producer state across restarts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::broker::disk::SyncKind;
use crate::protocol::batch::check_batch;
use crate::protocol::{BatchBuilder, Compression, ProducerStamp, Record, RecordBatch};

/// A syncer whose segment fsyncs can be held (a closed gate) and failed on demand, and
/// that records every fsync.
#[derive(Clone, Default)]
struct Faults(Arc<FaultState>);

#[derive(Default)]
struct FaultState {
    closed: Mutex<bool>,
    opened: Condvar,
    fail_next: AtomicUsize,
    entered: AtomicUsize,
    /// `entered` when the gate was last closed.
    baseline: AtomicUsize,
    calls: Mutex<Vec<(PathBuf, SyncKind)>>,
}

impl Faults {
    fn syncer(&self) -> Syncer {
        let f = self.clone();
        Syncer::with_hook(move |path, kind| f.hook(path, kind))
    }

    fn hook(&self, path: &Path, kind: SyncKind) -> std::io::Result<()> {
        let s = &self.0;
        s.calls.lock().unwrap().push((path.to_path_buf(), kind));
        if kind != SyncKind::Data || path.extension().is_none_or(|e| e != "log") {
            return Ok(());
        }
        s.entered.fetch_add(1, SeqCst);
        let mut closed = s.closed.lock().unwrap();
        // Never hang a test for good: a gate left closed opens after a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        while *closed && Instant::now() < deadline {
            closed = s.opened.wait_timeout(closed, Duration::from_millis(100)).unwrap().0;
        }
        drop(closed);
        if s.fail_next.load(SeqCst) > 0 {
            s.fail_next.fetch_sub(1, SeqCst);
            return Err(std::io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    /// Holds every segment fsync from now on (and forgets the fsyncs made so far).
    fn close(&self) {
        *self.0.closed.lock().unwrap() = true;
        self.0.baseline.store(self.0.entered.load(SeqCst), SeqCst);
        self.0.calls.lock().unwrap().clear();
    }

    fn open(&self) {
        *self.0.closed.lock().unwrap() = false;
        self.0.opened.notify_all();
    }

    fn fail_next(&self, n: usize) {
        self.0.fail_next.store(n, SeqCst);
    }

    /// Waits until at least `n` segment fsyncs have started since the gate was closed.
    async fn entered(&self, n: usize) {
        let base = self.0.baseline.load(SeqCst);
        poll_until("segment fsyncs to start", || self.0.entered.load(SeqCst) >= base + n).await;
    }

    fn calls(&self) -> Vec<(PathBuf, SyncKind)> {
        self.0.calls.lock().unwrap().clone()
    }
}

async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn check(b: &Bytes) -> Result<BatchHeader, AppendError> {
    check_batch(b)
        .ok()
        .flatten()
        .ok_or_else(|| AppendError { code: ErrorCode::CorruptBatch, message: "not a batch".into() })
}

/// A batch of `n` records with values `{tag}-{i}`, stamped for producer `pid` at `seq`
/// (`pid < 0`: not idempotent).
fn batch(tag: &str, n: u32, pid: i64, seq: i32) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Record {
            timestamp: i64::from(i),
            key: None,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            headers: vec![],
        });
    }
    let stamp = if pid < 0 {
        ProducerStamp::NONE
    } else {
        ProducerStamp { producer_id: pid, producer_epoch: 0, base_sequence: seq }
    };
    b.seal(Compression::None, None, stamp)
}

fn config(faults: &Faults) -> PartitionConfig {
    PartitionConfig { syncer: faults.syncer(), ..PartitionConfig::default() }
}

fn open(dir: &Path, config: PartitionConfig) -> (Arc<Partition>, OpenReport) {
    let (p, report) = Partition::open(dir, Arc::from("t"), 0, config, Arc::new(BrokerMetrics::default())).unwrap();
    (Arc::new(p), report)
}

async fn append(p: &Arc<Partition>, b: Bytes) -> Result<Appended, AppendError> {
    p.append(b, now_ms(), false, check, None).await
}

/// The values of every record readable from offset 0 (durable ones only).
fn values(p: &Partition) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let f = p.read_blocking(offset, 1 << 20).unwrap();
        if f.batches.is_empty() {
            return out;
        }
        for b in RecordBatch::split_all(f.batches).unwrap() {
            for r in b.records(1 << 20).unwrap() {
                if r.offset >= offset {
                    out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
                }
            }
            offset = b.header().last_offset() + 1;
        }
    }
}

async fn sync_round(p: &Arc<Partition>) {
    let q = p.clone();
    tokio::task::spawn_blocking(move || q.sync_round()).await.unwrap();
}

#[tokio::test]
async fn a_failed_log_is_cut_back_to_the_durable_end_and_dedup_forgets_what_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = open(dir.path(), PartitionConfig::default());
    let (b0, b1) = (batch("a", 2, 7, 0), batch("b", 2, 7, 2));
    assert_eq!(append(&p, b0.clone()).await.unwrap().base_offset, 0);
    p.flush_blocking().unwrap();
    assert_eq!(append(&p, b1.clone()).await.unwrap().base_offset, 2);
    // An fsync covering b1 fails: b1 is in doubt.
    p.fail_sync("injected".into());
    assert!(p.is_failed());
    assert_eq!(append(&p, batch("c", 1, 7, 4)).await.unwrap_err().code, ErrorCode::StorageError);
    assert_eq!(p.recover_blocking().unwrap(), Some(2));
    assert!(!p.is_failed());
    assert_eq!((p.durable_end(), p.metadata(0).end_offset), (2, 2));
    // The producer's retry of b1 is appended again, not answered from dedup state that
    // pointed at the cut offsets; b0 is still recognised.
    let again = append(&p, b1).await.unwrap();
    assert_eq!((again.base_offset, again.duplicate, again.generation), (2, false, 1));
    assert!(append(&p, b0).await.unwrap().duplicate);
    assert_eq!(p.recover_blocking().unwrap(), None);
    p.flush_blocking().unwrap();
    assert_eq!(values(&p), ["a-0", "a-1", "b-0", "b-1"]);
}

/// Finding 1: after a cut, later appends reuse the cut offsets; once they are fsync'd a
/// late waiter for the cut batch used to see `durable end >= end` and answer success.
#[tokio::test]
async fn a_waiter_for_a_cut_batch_fails_even_when_later_appends_reuse_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = open(dir.path(), PartitionConfig::default());
    let cut = append(&p, batch("cut", 2, -1, 0)).await.unwrap();
    p.fail_sync("injected".into());
    assert_eq!(p.recover_blocking().unwrap(), Some(2));
    let reused = append(&p, batch("new", 3, -1, 0)).await.unwrap();
    assert_eq!(reused.base_offset, 0);
    p.flush_blocking().unwrap();
    assert!(p.durable_end() >= cut.end_offset);
    let err = p.wait_durable(cut.end_offset, cut.generation).await.unwrap_err();
    assert!(err.contains("cut"), "{err}");
    p.wait_durable(reused.end_offset, reused.generation).await.unwrap();
}

/// Test audit: an acks=all answer waits for an fsync that covers the batch.
#[tokio::test]
async fn an_ack_waits_until_the_durable_end_covers_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let (p, _) = open(dir.path(), config(&faults));
    p.spawn_flusher();
    faults.close();
    let a = append(&p, batch("x", 3, -1, 0)).await.unwrap();
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.wait_durable(a.end_offset, a.generation).await }
    });
    // The group commit's fsync has started and is held: nothing is durable yet.
    faults.entered(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "answered before the fsync returned");
    assert_eq!(p.durable_end(), 0);
    faults.open();
    waiter.await.unwrap().unwrap();
    assert!(p.durable_end() >= a.end_offset);
    poll_until("the round to be counted", || p.metrics.fsyncs.load(Relaxed) == 1).await;
}

/// Test audit: many acks=all waiters and one failed fsync: every waiter gets an error,
/// the log is cut back, and each producer retry lands exactly once.
#[tokio::test]
async fn many_waiters_when_one_fsync_fails_all_fail_the_log_is_cut_and_each_retry_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let (p, _) = open(dir.path(), config(&faults));
    p.spawn_flusher();
    // Five: the most a producer has in flight per partition (and the dedup window).
    let batches: Vec<Bytes> = (0..5).map(|i| batch(&format!("b{i}"), 2, 9, i * 2)).collect();
    let mut appended = Vec::new();
    for b in &batches {
        appended.push(append(&p, b.clone()).await.unwrap());
    }
    faults.fail_next(1);
    let waiters: Vec<_> = appended
        .iter()
        .map(|a| {
            let (p, a) = (p.clone(), *a);
            tokio::spawn(async move { p.wait_durable(a.end_offset, a.generation).await })
        })
        .collect();
    for w in waiters {
        let err = w.await.unwrap().unwrap_err();
        assert!(err.contains("injected fsync failure"), "{err}");
    }
    assert_eq!(p.metrics.fsync_failures.load(Relaxed), 1);
    // The flusher cuts the log back to the durable end (nothing) and starts generation 1.
    poll_until("the in-place recovery", || p.durability().generation == 1).await;
    assert_eq!((p.metadata(0).end_offset, p.durable_end()), (0, 0));
    assert_eq!(p.metrics.offsets_cut.load(Relaxed), 10);
    // The producer retries every batch: each is stored again, once.
    for (i, b) in batches.iter().enumerate() {
        let a = append(&p, b.clone()).await.unwrap();
        assert_eq!((a.base_offset, a.duplicate), (i as i64 * 2, false));
        p.wait_durable(a.end_offset, a.generation).await.unwrap();
    }
    for (i, b) in batches.iter().enumerate() {
        let a = append(&p, b.clone()).await.unwrap();
        assert_eq!((a.base_offset, a.duplicate), (i as i64 * 2, true));
    }
    let v = values(&p);
    assert_eq!(v.len(), 10);
    assert_eq!(v[..2], ["b0-0", "b0-1"]);
    assert_eq!(v[8..], ["b4-0", "b4-1"]);
}

/// Finding 1 (fetch) and the test audit: what a consumer at the tail sees while an fsync
/// is pending, when it fails, and across the cut that follows.
#[tokio::test]
async fn a_consumer_at_the_tail_sees_only_durable_records_never_one_that_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let (p, _) = open(dir.path(), config(&faults));
    p.spawn_flusher();
    faults.close();
    append(&p, batch("doomed", 2, -1, 0)).await.unwrap();
    // Stored but not durable: not served.
    let f = p.read(0, 1 << 20, Duration::ZERO).await.unwrap();
    assert_eq!((f.batches.len(), f.durable_end, f.high_watermark), (0, 0, 2));
    assert_eq!(p.metadata(0).end_offset, 2, "metadata still shows the log end");
    // A fetch that may wait asks for the group commit and waits for it.
    let reader = tokio::spawn({
        let p = p.clone();
        async move { p.read(0, 1 << 20, Duration::from_secs(30)).await }
    });
    faults.entered(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!reader.is_finished(), "served before the fsync returned");
    // The fsync fails: the reader gets nothing.
    faults.fail_next(1);
    faults.open();
    let f = reader.await.unwrap().unwrap();
    assert_eq!((f.batches.len(), f.durable_end), (0, 0));
    poll_until("the in-place recovery", || p.durability().generation == 1).await;
    // Offsets 0..2 are reused by another batch; the consumer only ever sees that one.
    let a = append(&p, batch("kept", 3, -1, 0)).await.unwrap();
    assert_eq!(a.base_offset, 0);
    let f = p.read(0, 1 << 20, Duration::from_secs(30)).await.unwrap();
    assert_eq!((f.durable_end, f.high_watermark), (3, 3));
    assert_eq!(RecordBatch::split_all(f.batches).unwrap().len(), 1);
    assert_eq!(values(&p), ["kept-0", "kept-1", "kept-2"]);
}

/// Finding 3: the fsync of a full segment happens in the flusher, not in the append that
/// rolls; and the durable end never passes a sealed segment that is not fsync'd.
#[tokio::test]
async fn a_roll_does_not_fsync_in_the_append_and_durability_waits_for_the_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let cfg = PartitionConfig { log: LogConfig { segment_bytes: 300, ..LogConfig::default() }, ..config(&faults) };
    let (p, _) = open(dir.path(), cfg);
    p.spawn_flusher();
    faults.close();
    let mut last = None;
    for i in 0..6 {
        let a = tokio::time::timeout(Duration::from_secs(20), append(&p, batch(&format!("r{i}"), 4, -1, 0)))
            .await
            .expect("an append that rolls waited for an fsync")
            .unwrap();
        last = Some(a);
    }
    let last = last.unwrap();
    assert!(p.metrics.segment_rolls.load(Relaxed) >= 2);
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.wait_durable(last.end_offset, last.generation).await }
    });
    faults.entered(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    assert_eq!(p.durable_end(), 0, "durable before the sealed segments were fsync'd");
    faults.open();
    waiter.await.unwrap().unwrap();
    // Sealed segments first (oldest first), then the directory, then the active one.
    let calls: Vec<_> =
        faults.calls().into_iter().filter(|(path, _)| path.extension().is_some_and(|e| e == "log")).collect();
    let names: Vec<_> = calls.iter().map(|(path, _)| path.file_name().unwrap().to_owned()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "segments fsync'd out of order: {names:?}");
    assert_eq!(values(&p).len(), 24);
}

/// Finding 5 (second half): state comes back from the snapshot plus the headers after
/// it, not from every header; dedup survives a crash; a snapshot past the end is dropped.
#[tokio::test]
async fn producer_state_comes_back_from_the_snapshot_and_the_tail_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        PartitionConfig { log: LogConfig { segment_bytes: 400, ..LogConfig::default() }, ..PartitionConfig::default() };
    let (p, _) = open(dir.path(), cfg.clone());
    let mut appended = Vec::new();
    for i in 0..40 {
        appended.push(append(&p, batch(&format!("s{i}"), 2, 5, i * 2)).await.unwrap());
        // Group commit runs now and then, writing the snapshot taken at each roll.
        if i % 7 == 6 {
            sync_round(&p).await;
        }
    }
    sync_round(&p).await;
    drop(p); // a crash: no shutdown snapshot
    let (p, report) = open(dir.path(), cfg.clone());
    let snap = report.producers.snapshot_offset.expect("a roll snapshot was used");
    assert!(snap > 0 && report.producers.headers_scanned < 40, "{report:?}");
    assert_eq!(report.producers.headers_scanned as i64, (80 - snap) / 2, "{report:?}");
    // Dedup survived: the last five batches are duplicates with their offsets.
    for (i, a) in appended.iter().enumerate().skip(35) {
        let again = append(&p, batch(&format!("s{i}"), 2, 5, i as i32 * 2)).await.unwrap();
        assert_eq!((again.duplicate, again.base_offset), (true, a.base_offset));
    }
    let err = append(&p, batch("s30", 2, 5, 60)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::OutOfOrderSequence);
    // A clean shutdown leaves a snapshot at the end: nothing to scan.
    p.flush_blocking().unwrap();
    drop(p);
    let (p, report) = open(dir.path(), cfg.clone());
    assert_eq!((report.producers.snapshot_offset, report.producers.headers_scanned), (Some(80), 0));
    // The tail is lost after the snapshot was written (a crash before writeback): the
    // snapshot now describes offsets that will be reused and must be dropped.
    p.flush_blocking().unwrap();
    drop(p);
    let newest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&newest).unwrap();
    let len = f.metadata().unwrap().len();
    let last_len = batch("s39", 2, 5, 78).len() as u64;
    f.set_len(len - last_len).unwrap();
    let (p, report) = open(dir.path(), cfg);
    assert!(report.producers.snapshot_ignored.is_some(), "{report:?}");
    // The lost batch is appended again at its offset, not answered as a duplicate.
    let again = append(&p, batch("s39", 2, 5, 78)).await.unwrap();
    assert_eq!((again.duplicate, again.base_offset), (false, 78));
}

/// Finding 5 (second half): producers idle longer than the expiration are forgotten, by
/// the appends' own times (the owner's sweep used to read the wall clock, so a loaded
/// machine expired producers that were not idle by the times the jobs carried).
#[tokio::test]
async fn idle_producers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let minute = 60_000;
    let cfg = PartitionConfig { producer_expiration: Duration::from_secs(3600), ..PartitionConfig::default() };
    let (p, _) = open(dir.path(), cfg);
    // Job times far from the wall clock: only they may count.
    let t0 = now_ms() + 10 * 60 * minute;
    let at = |b: Bytes, t: i64| p.append(b, t, false, check, None);
    at(batch("old", 1, 1, 0), t0).await.unwrap();
    at(batch("recent", 1, 2, 0), t0 + 50 * minute).await.unwrap();
    assert_eq!(p.metrics.producers_expired.load(Relaxed), 0);
    // 61 minutes after producer 1's append, 11 after producer 2's: only 1 is idle too long.
    at(batch("new", 1, 3, 0), t0 + 61 * minute).await.unwrap();
    assert_eq!(p.metrics.producers_expired.load(Relaxed), 1);
    let err = at(batch("old", 1, 1, 1), t0 + 62 * minute).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownProducerId);
    at(batch("recent", 1, 2, 1), t0 + 62 * minute).await.unwrap();
}

/// Retention deleted sealed segments whose fsync was still pending (it looked at sizes and
/// times only). Like Kafka, which deletes only below the high watermark, it now stops at
/// the first segment that is not wholly below the durable end.
#[tokio::test]
async fn retention_stops_at_the_first_segment_not_wholly_durable() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::default();
    let log = LogConfig { segment_bytes: 300, retention_bytes: Some(0), ..LogConfig::default() };
    let (p, _) = open(dir.path(), PartitionConfig { log, ..config(&faults) });
    p.spawn_flusher();
    faults.close();
    let mut last = None;
    for i in 0..6 {
        last = Some(append(&p, batch(&format!("r{i}"), 4, -1, 0)).await.unwrap());
    }
    let last = last.unwrap();
    assert!(p.metrics.segment_rolls.load(Relaxed) >= 2);
    // The round that fsyncs the sealed segments is held: none of them is durable.
    faults.entered(1).await;
    assert_eq!(p.durable_end(), 0);
    assert_eq!(p.apply_retention(now_ms()).await.unwrap(), 0, "deleted a segment that was never fsync'd");
    assert_eq!(p.metadata(0).log_start_offset, 0);
    faults.open();
    p.wait_durable(last.end_offset, last.generation).await.unwrap();
    assert!(p.apply_retention(now_ms()).await.unwrap() >= 2);
    assert!(p.metadata(0).log_start_offset > 0);
}

/// Shutdown: the final flush ran while the flusher's round could still be live, and both
/// replace the recovery point and the producer-state snapshot (through the same `.tmp`
/// files). Here the round is held inside its first fsync while the final flush runs: the
/// flush must wait for it, so that what the flush writes (everything durable, a snapshot
/// at the end) is what stays on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_flush_waits_for_a_live_round_and_its_state_files_win() {
    let dir = tempfile::tempdir().unwrap();
    let (entered, release) = (Arc::new(AtomicUsize::new(0)), Arc::new((Mutex::new(false), Condvar::new())));
    let syncer = {
        let (entered, release) = (entered.clone(), release.clone());
        Syncer::with_hook(move |path, kind| {
            if kind == SyncKind::Data
                && path.extension().is_some_and(|e| e == "log")
                && entered.fetch_add(1, SeqCst) == 0
            {
                // Only the first segment fsync (the flusher's round) is held, a minute at most.
                let (lock, cv) = &*release;
                let mut go = lock.lock().unwrap();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !*go && Instant::now() < deadline {
                    go = cv.wait_timeout(go, Duration::from_millis(100)).unwrap().0;
                }
            }
            Ok(())
        })
    };
    let log = LogConfig { segment_bytes: 300, ..LogConfig::default() };
    let cfg = PartitionConfig { log, syncer, ..PartitionConfig::default() };
    let (p, _) = open(dir.path(), cfg.clone());
    p.spawn_flusher();
    for i in 0..6 {
        append(&p, batch(&format!("s{i}"), 4, 5, i * 4)).await.unwrap();
    }
    let end = p.metadata(0).end_offset;
    poll_until("the round to hold its first fsync", || entered.load(SeqCst) >= 1).await;
    let flush = tokio::task::spawn_blocking({
        let p = p.clone();
        move || p.flush_blocking()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!flush.is_finished(), "the final flush ran beside a live round");
    {
        let (lock, cv) = &*release;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    flush.await.unwrap().unwrap();
    assert_eq!(p.durable_end(), end);
    drop(p);
    let recovery_point = std::fs::read_to_string(dir.path().join("recovery-point")).unwrap();
    assert_eq!(recovery_point.trim(), end.to_string());
    let (_, report) = open(dir.path(), cfg);
    assert_eq!((report.producers.snapshot_offset, report.producers.headers_scanned), (Some(end), 0));
}

/// The flusher woke up every second whatever the partition's state (thousands of idle
/// partitions meant thousands of wake-ups a second): it now sleeps until a round is asked
/// for, and ticks once a second only while the log is failed and must be recovered.
#[tokio::test]
async fn the_flusher_sleeps_until_asked_and_ticks_only_while_the_log_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = open(dir.path(), PartitionConfig::default());
    p.spawn_flusher();
    // Long enough for two ticks of a once-a-second timer.
    let ticks = Duration::from_millis(2500);
    tokio::time::sleep(ticks).await;
    assert_eq!(p.flusher_wakeups.load(Relaxed), 0, "the flusher ticked with nothing to do");
    let a = append(&p, batch("x", 1, -1, 0)).await.unwrap();
    p.wait_durable(a.end_offset, a.generation).await.unwrap();
    let asked = p.flusher_wakeups.load(Relaxed);
    assert!(asked >= 1);
    // A failed log is retried by the tick until it recovers (here at the first try).
    p.fail_sync("injected".into());
    poll_until("the in-place recovery", || p.durability().generation == 1).await;
    let recovered = p.flusher_wakeups.load(Relaxed);
    tokio::time::sleep(ticks).await;
    assert_eq!(p.flusher_wakeups.load(Relaxed), recovered, "the flusher kept ticking after the recovery");
    // Dropping the partition ends its flusher, which holds no strong reference meanwhile.
    let weak = Arc::downgrade(&p);
    drop(p);
    assert!(weak.upgrade().is_none());
}
