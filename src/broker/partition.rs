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
        // fsync would prove nothing, so the log refuses writes until reopened.
        self.lock().log.mark_failed("a failed group-commit fsync");
        tracing::error!(topic = %self.topic, partition = self.index, error = %msg, "fsync failed");
        self.durable.send_modify(|d| {
            d.failures += 1;
            d.last_error = Some(Arc::from(format!("fsync of {}-{} failed: {msg}", self.topic, self.index)));
        });
    }

    /// The group-commit loop: waits for sync requests and serves them until the
    /// partition is dropped (the task holds only a weak reference).
    pub fn spawn_flusher(self: &Arc<Self>, metrics: Arc<BrokerMetrics>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(p) = weak.upgrade() else { return };
                // Wait without keeping the partition alive forever.
                let notified = async { p.sync_wanted.notified().await };
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                }
                if p.sync_once().await {
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
