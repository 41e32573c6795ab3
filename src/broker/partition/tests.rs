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

/// Finding 5 (second half): producers idle longer than the expiration are forgotten.
#[tokio::test]
async fn idle_producers_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PartitionConfig { producer_expiration: Duration::from_millis(50), ..PartitionConfig::default() };
    let (p, _) = open(dir.path(), cfg);
    append(&p, batch("old", 1, 1, 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Any append sweeps; producer 1 has been idle for longer than 50 ms.
    append(&p, batch("new", 1, 2, 0)).await.unwrap();
    assert_eq!(p.metrics.producers_expired.load(Relaxed), 1);
    let err = append(&p, batch("old", 1, 1, 1)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownProducerId);
    // (That a recent producer is kept is the unit test in producer_state.rs: here a stall
    // of the machine longer than 50 ms would expire it too.)
}
