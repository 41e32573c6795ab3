//! One partition on the broker: its log, its idempotent-producer state, and group commit.
//!
//! Appends run under a short `std::sync::Mutex` (never held across `.await`). Durability
//! for acks=all is a separate, per-partition flusher task: requests ask for a sync and
//! wait on a `watch` of the durable end offset; one `fsync` covers every batch appended
//! before it started, so batches that arrive while an fsync runs share the next one
//! (group commit).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use super::log::{LogConfig, LogError, PartitionLog, RecoveryReport};
use super::metrics::{inc, BrokerMetrics};
use super::producer_state::{ProducerStates, SequenceCheck};
use crate::protocol::frame::PartitionMetadata;
use crate::protocol::{BatchHeader, ErrorCode};

/// Where durability stands: everything below `end` is fsync'd.
#[derive(Debug, Clone, Default)]
pub struct Durability {
    /// Offsets below this are on stable storage.
    pub end: i64,
    /// Number of failed fsyncs so far.
    pub failures: u64,
    /// Message of the latest failure.
    pub last_error: Option<Arc<str>>,
}

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: i64,
    /// One past the last record's offset.
    pub end_offset: i64,
    /// Broker time of the (original) append.
    pub append_time: i64,
    /// A retry answered from the dedup state; nothing new was written.
    pub duplicate: bool,
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendError {
    /// Wire code for the response.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

struct State {
    log: PartitionLog,
    producers: ProducerStates,
    /// Next offset handed out in sink mode, where nothing reaches the log.
    sink_next: i64,
}

/// A partition: log + producer state + group commit.
pub struct Partition {
    topic: Arc<str>,
    index: u32,
    state: Mutex<State>,
    durable: watch::Sender<Durability>,
    sync_wanted: Notify,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

impl Partition {
    /// Opens the partition's log in `dir`, recovers it and rebuilds producer state from
    /// the stored batch headers.
    pub fn open(
        dir: &Path,
        topic: Arc<str>,
        index: u32,
        config: LogConfig,
    ) -> Result<(Partition, RecoveryReport), LogError> {
        let (log, report) = PartitionLog::open(dir, config)?;
        let mut producers = ProducerStates::default();
        log.for_each_header(|h| producers.record(h, h.max_timestamp))?;
        let end = log.end_offset();
        let partition = Partition {
            topic,
            index,
            state: Mutex::new(State { log, producers, sink_next: end }),
            // Recovery validated what is on disk; treat it as durable.
            durable: watch::Sender::new(Durability { end, ..Durability::default() }),
            sync_wanted: Notify::new(),
        };
        Ok((partition, report))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the log consistent (appends roll back on
        // error), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Checks the batch's sequence against producer state and appends it (or answers a
    /// duplicate with the original offsets). `batch` must have passed `check_batch`.
    /// With `sink`, the append is skipped but offsets and producer state advance as if
    /// it had happened (benchmark mode).
    pub fn append(&self, batch: &[u8], header: &BatchHeader, now_ms: i64, sink: bool) -> Result<Appended, AppendError> {
        let mut st = self.lock();
        match st.producers.check(header) {
            SequenceCheck::Append => {}
            SequenceCheck::Duplicate(meta) => {
                return Ok(Appended {
                    base_offset: meta.base_offset,
                    end_offset: meta.last_offset + 1,
                    append_time: meta.append_time,
                    duplicate: true,
                })
            }
            SequenceCheck::Reject(code, message) => return Err(AppendError { code, message }),
        }
        let base_offset = if sink {
            let base = st.sink_next;
            st.sink_next += i64::from(header.record_count);
            base
        } else {
            st.log
                .append(batch, header)
                .map_err(|e| AppendError { code: ErrorCode::StorageError, message: e.to_string() })?
                .base_offset
        };
        let mut stored = *header;
        stored.base_offset = base_offset;
        st.producers.record(&stored, now_ms);
        Ok(Appended { base_offset, end_offset: stored.last_offset() + 1, append_time: now_ms, duplicate: false })
    }

    /// Whole batches from `offset`, at most about `max_bytes` (at least one batch).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64, i64), LogError> {
        let st = self.lock();
        let data = st.log.read(offset, max_bytes)?;
        Ok((data, st.log.end_offset(), st.log.log_start_offset()))
    }

    /// Offsets and size for metadata.
    pub fn metadata(&self, leader: u32) -> PartitionMetadata {
        let st = self.lock();
        PartitionMetadata {
            partition: self.index,
            leader,
            log_start_offset: st.log.log_start_offset(),
            end_offset: st.log.end_offset(),
            size_bytes: st.log.size_bytes(),
        }
    }

    /// Waits until every offset below `end` is durable. Fails if an fsync attempted after
    /// this call started fails before that.
    pub async fn wait_durable(&self, end: i64) -> Result<(), String> {
        let mut rx = self.durable.subscribe();
        let failures_before = {
            let d = rx.borrow_and_update();
            if d.end >= end {
                return Ok(());
            }
            d.failures
        };
        self.sync_wanted.notify_one();
        let d = rx
            .wait_for(|d| d.end >= end || d.failures > failures_before)
            .await
            .map_err(|_| "partition closed".to_string())?;
        if d.end >= end {
            Ok(())
        } else {
            Err(d.last_error.as_deref().unwrap_or("fsync failed").to_string())
        }
    }

    /// The end offset known durable.
    pub fn durable_end(&self) -> i64 {
        self.durable.borrow().end
    }

    /// One group-commit round: fsync the log outside the lock and publish the new durable
    /// end. Returns whether an fsync ran.
    pub async fn sync_once(&self) -> bool {
        let (file, end) = self.lock().log.sync_target();
        if end <= self.durable.borrow().end {
            return false;
        }
        let res = tokio::task::spawn_blocking(move || file.sync_data()).await;
        match res {
            Ok(Ok(())) => self.durable.send_modify(|d| {
                d.end = d.end.max(end);
            }),
            Ok(Err(e)) => self.fail_sync(e.to_string()),
            Err(e) => self.fail_sync(format!("fsync task failed: {e}")),
        }
        true
    }

    fn fail_sync(&self, msg: String) {
        // After a failed fsync the kernel may have dropped dirty pages: a later successful
        // fsync would prove nothing, so the log refuses writes until the flusher has cut
        // it back to what is known durable and reopened it (`recover_blocking`).
        self.lock().log.mark_failed("a failed group-commit fsync");
        tracing::error!(topic = %self.topic, partition = self.index, error = %msg, "fsync failed");
        self.durable.send_modify(|d| {
            d.failures += 1;
            d.last_error = Some(Arc::from(format!("fsync of {}-{} failed: {msg}", self.topic, self.index)));
        });
    }

    /// Whether the log refuses writes after a failure (until the flusher recovers it).
    pub fn is_failed(&self) -> bool {
        self.lock().log.is_failed()
    }

    /// Makes a failed log writable again, if the disk now allows it: cuts it back to the
    /// durable end (what follows is in doubt after a failed write or fsync), fsyncs the
    /// cut, reopens the log (recovery re-checks the tail and rebuilds the index) and
    /// rebuilds producer state from it, so a producer's retry of a batch that was cut is
    /// appended again rather than answered as a duplicate of offsets that no longer
    /// exist. Waiters for cut offsets get an error. Blocking: run it off the runtime.
    /// Returns how many offsets were cut, or `None` when the log was not failed.
    pub fn recover_blocking(&self) -> Result<Option<i64>, LogError> {
        let mut st = self.lock();
        if !st.log.is_failed() {
            return Ok(None);
        }
        let old_end = st.log.end_offset();
        st.log.cut_to_durable(self.durable.borrow().end)?;
        let (log, _report) = PartitionLog::open(st.log.dir(), st.log.config().clone())?;
        let mut producers = ProducerStates::default();
        log.for_each_header(|h| producers.record(h, h.max_timestamp))?;
        let end = log.end_offset();
        *st = State { log, producers, sink_next: end };
        drop(st);
        let cut = old_end - end;
        self.durable.send_modify(|d| {
            d.end = end;
            if cut > 0 {
                d.failures += 1;
                d.last_error = Some(Arc::from(format!(
                    "{}-{}: offsets from {end} were cut after a write failure",
                    self.topic, self.index
                )));
            }
        });
        Ok(Some(cut))
    }

    async fn try_recover(self: &Arc<Self>) {
        let p = self.clone();
        match tokio::task::spawn_blocking(move || p.recover_blocking()).await {
            Ok(Ok(Some(cut))) => tracing::warn!(topic = %self.topic, partition = self.index, cut_offsets = cut,
                "partition writable again after a write failure; offsets that were not durable were cut"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::debug!(topic = %self.topic, partition = self.index, error = %e,
                "partition still cannot recover from a write failure"),
            Err(e) => tracing::error!(topic = %self.topic, partition = self.index, error = %e, "recovery task failed"),
        }
    }

    /// The group-commit loop: waits for sync requests and serves them until the
    /// partition is dropped (the task holds only a weak reference). While the log is
    /// failed it tries, about once a second, to make it writable again.
    pub fn spawn_flusher(self: &Arc<Self>, metrics: Arc<BrokerMetrics>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                // Wait without keeping the partition alive forever.
                let notified = async { p.sync_wanted.notified().await };
                let tick = tokio::select! {
                    _ = notified => false,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => true,
                };
                if p.is_failed() {
                    p.try_recover().await;
                    continue;
                }
                if !tick && p.sync_once().await {
                    inc(&metrics.fsyncs);
                }
            }
        });
    }

    /// Synchronous fsync of everything appended (used at shutdown).
    pub fn flush_blocking(&self) -> Result<(), LogError> {
        let mut st = self.lock();
        st.log.flush()?;
        let end = st.log.end_offset();
        drop(st);
        self.durable.send_modify(|d| d.end = d.end.max(end));
        Ok(())
    }

    /// Applies retention; returns segments deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.lock().log.apply_retention(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::check_batch;
    use crate::protocol::{BatchBuilder, Compression, ProducerStamp, Record};

    fn batch(seq: i32, n: u32) -> (Bytes, BatchHeader) {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(&Record { timestamp: i64::from(i), key: None, value: Some(Bytes::from("v")), headers: vec![] });
        }
        let stamp = ProducerStamp { producer_id: 7, producer_epoch: 0, base_sequence: seq };
        let bytes = b.seal(Compression::None, None, stamp);
        let h = check_batch(&bytes).unwrap().unwrap();
        (bytes, h)
    }

    #[test]
    fn a_failed_log_is_cut_back_to_the_durable_end_and_dedup_forgets_what_was_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = Partition::open(dir.path(), Arc::from("t"), 0, LogConfig::default()).unwrap();
        let (b0, h0) = batch(0, 2);
        let (b1, h1) = batch(2, 2);
        assert_eq!(p.append(&b0, &h0, 0, false).unwrap().base_offset, 0);
        p.flush_blocking().unwrap();
        assert_eq!(p.append(&b1, &h1, 0, false).unwrap().base_offset, 2);
        // An fsync covering b1 fails: b1 is in doubt.
        p.fail_sync("injected".into());
        assert!(p.is_failed());
        let (b2, h2) = batch(4, 1);
        assert_eq!(p.append(&b2, &h2, 0, false).unwrap_err().code, ErrorCode::StorageError);
        assert_eq!(p.recover_blocking().unwrap(), Some(2));
        assert!(!p.is_failed());
        assert_eq!((p.durable_end(), p.metadata(0).end_offset), (2, 2));
        // The producer's retry of b1 is appended again, not answered from dedup state that
        // pointed at the cut offsets; b0 is still recognised.
        let again = p.append(&b1, &h1, 0, false).unwrap();
        assert_eq!((again.base_offset, again.duplicate), (2, false));
        assert!(p.append(&b0, &h0, 0, false).unwrap().duplicate);
        assert_eq!(p.recover_blocking().unwrap(), None);
        p.flush_blocking().unwrap();
        let (data, end, _) = p.read(0, 1 << 20).unwrap();
        assert_eq!(end, 4);
        assert_eq!(crate::protocol::RecordBatch::split_all(data).unwrap().len(), 2);
    }
}
