//! One partition on the broker: its log, its idempotent-producer state, and group commit.
//!
//! # Who does what
//!
//! The async runtime never touches the disk and never waits for the partition's lock:
//!
//! - **The owner** (`owner`): appends (with the batch check that decodes the records),
//!   segment rolls and retention are jobs in a queue drained by one task at a time on
//!   tokio's blocking pool, in order, under the partition's `std::sync::Mutex`. A caller
//!   awaits a `oneshot` answer.
//! - **The flusher** (`flusher`): a per-partition task that serves sync requests with
//!   *group commit*: it plans a round under the lock (the sealed segments not fsync'd yet,
//!   the directory, the active segment), fsyncs outside it on the blocking pool, and
//!   publishes the new durable end on a `watch`. One round covers every batch appended
//!   before it started, so batches that arrive while an fsync runs share the next one. A
//!   roll asks for a round, so the fsync of a full segment happens here, never on an
//!   append; the durable end never passes a sealed segment that is not fsync'd.
//! - **Reads** plan under the lock and read the file outside it, on the blocking pool.
//! - Offsets for metadata are published in atomics.
//!
//! # Durability and generations
//!
//! After a failed fsync nothing past the durable end can be trusted: the flusher cuts the
//! log back to it and reopens it ([`Partition::recover_blocking`]); later appends reuse the
//! cut offsets. Each cut starts a new *generation*. An append answers the generation it
//! was made in, and [`Partition::wait_durable`] succeeds only if the batch became durable
//! in that generation or lies below every cut made since — a batch that was cut fails
//! even when a later batch at the same offsets is fsync'd. Reads serve only offsets below
//! the durable end ([`Partition::read`]), so an offset a consumer has seen is never cut
//! and never reused.
//!
//! # Producer state
//!
//! Rebuilt at open from a snapshot (`snapshot`, written after the fsync that follows a
//! roll, and at shutdown) plus the headers stored after it; producers idle longer than
//! [`PartitionConfig::producer_expiration`] are forgotten.

mod durability;
mod flusher;
mod limits;
mod owner;
mod replica;
mod snapshot;

/// A storage task on the blocking pool that panicked or was cancelled, as a log error.
pub(super) fn task_failed(op: &'static str, e: tokio::task::JoinError) -> LogError {
    LogError::Io { op, path: Default::default(), source: std::io::Error::other(e.to_string()) }
}

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

pub use durability::Durability;
use durability::Verdict;
pub use limits::{default_concurrent_checks, CheckSlots, IoLimits, DEFAULT_CONCURRENT_READS};
pub use snapshot::ProducerStateReport;

use super::disk::Syncer;
use super::log::{LogConfig, LogError, PartitionLog, ReadBound, RecoveryReport};
use super::metrics::BrokerMetrics;
use super::producer_state::ProducerStates;
use super::telemetry::PartitionCounters;
use crate::protocol::frame::PartitionMetadata;
use crate::protocol::{BatchHeader, ErrorCode};

/// Default [`PartitionConfig::producer_expiration`]: 1 day, Kafka's
/// `producer.id.expiration.ms` default. A producer idle that long loses its dedup state;
/// long enough that no realistic retry outlives it.
pub const DEFAULT_PRODUCER_EXPIRATION: Duration = Duration::from_secs(24 * 3600);

/// How long a fetch at a stored but not yet durable offset waits for the group commit
/// that makes it readable before answering what is durable (like Kafka's
/// `fetch.max.wait.ms`, but only when there is data to wait for).
pub const READ_DURABLE_WAIT: Duration = Duration::from_secs(5);

/// Settings of a partition.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    /// The log's settings.
    pub log: LogConfig,
    /// Forget a producer's dedup state after this long without an append. Default
    /// [`DEFAULT_PRODUCER_EXPIRATION`].
    pub producer_expiration: Duration,
    /// How data is made durable (fault injection in tests). Default: the OS's fsync.
    pub syncer: Syncer,
    /// Bounds on blocking work shared with every other partition that has a clone of
    /// this config (the broker's registry gives all its partitions one). Default
    /// [`IoLimits::default`].
    pub limits: IoLimits,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            log: LogConfig::default(),
            producer_expiration: DEFAULT_PRODUCER_EXPIRATION,
            syncer: Syncer::os(),
            limits: IoLimits::default(),
        }
    }
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
    /// The log generation the batch is in: pass it to [`Partition::wait_durable`].
    pub generation: u64,
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendError {
    /// Wire code for the response.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// The check a batch must pass before it is appended (structure, CRC, records): the
/// request layer's, run by the partition off the async runtime. Returns the batch header.
pub type BatchCheck = fn(&Bytes) -> Result<BatchHeader, AppendError>;

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Whole batches as stored, all below `durable_end`.
    pub batches: Bytes,
    /// The log end offset (the next offset to be assigned), as `FetchOk` reports it.
    pub high_watermark: i64,
    /// The durable end offset: only offsets below it are served.
    pub durable_end: i64,
    /// The first offset still stored.
    pub log_start_offset: i64,
}

/// What opening a partition found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The log's recovery.
    pub log: RecoveryReport,
    /// How producer state was rebuilt.
    pub producers: ProducerStateReport,
}

pub(crate) struct State {
    log: PartitionLog,
    producers: ProducerStates,
    /// Next offset handed out in sink mode, where nothing reaches the log.
    sink_next: i64,
    /// Bumped by every in-place recovery.
    generation: u64,
    /// Producer state as of the base of the newest segment, taken at its roll; written by
    /// the flusher after the round that fsyncs the sealed segment.
    snapshot: Option<(i64, ProducerStates)>,
    /// Broker time of the next sweep for idle producers.
    next_expiry_ms: i64,
}

/// Offsets published for lock-free metadata.
#[derive(Debug, Default)]
struct Shape {
    log_start: AtomicI64,
    end: AtomicI64,
    size: AtomicU64,
}

/// A partition: log + producer state + group commit.
pub struct Partition {
    topic: Arc<str>,
    index: u32,
    dir: std::path::PathBuf,
    config: PartitionConfig,
    metrics: Arc<BrokerMetrics>,
    state: Mutex<State>,
    /// Held by whatever replaces the partition's state files (`recovery-point`,
    /// `producer-state`) outside the state lock: a group-commit round for its whole
    /// length, the final flush, in-place recovery. So the final flush never runs beside a
    /// live round (both write the same `.tmp` files, and the round's older recovery point
    /// and snapshot would land after the flush's), and a replica's truncation (a round's
    /// producer-state snapshot is never written for a log cut meanwhile). Taken before
    /// `state`, never after.
    rounds: Mutex<()>,
    jobs: Mutex<owner::Jobs>,
    durable: watch::Sender<Durability>,
    /// Asks the flusher for a round (shared with its task, which holds no strong
    /// reference to the partition while it waits).
    sync_wanted: Arc<Notify>,
    /// Times the flusher woke up (a sync request, or its tick while the log is failed).
    flusher_wakeups: AtomicU64,
    shape: Shape,
    /// What the request layer appended to and read from this partition (for `/metrics`).
    pub(crate) counters: PartitionCounters,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// Opens the partition's log in `dir`, recovers it (fsyncing what it keeps) and
    /// rebuilds producer state from the snapshot and the batch headers after it.
    /// Blocking. Call [`Self::spawn_flusher`] once the partition is in an `Arc`.
    pub fn open(
        dir: &Path,
        topic: Arc<str>,
        index: u32,
        config: PartitionConfig,
        metrics: Arc<BrokerMetrics>,
    ) -> Result<(Partition, OpenReport), LogError> {
        let (log, log_report) = PartitionLog::open_with(dir, config.log.clone(), config.syncer.clone())?;
        let now = now_ms();
        let (producers, producer_report) =
            snapshot::load(&log, now, config.producer_expiration, &config.syncer, &metrics)?;
        // When this open had to read headers, the next one starts from here instead,
        // whatever happens before a clean shutdown.
        if producer_report.headers_scanned > 0 {
            snapshot::write(log.dir(), log.end_offset(), &producers, &config.syncer);
        }
        let end = log.durable_offset();
        let state = State::new(log, producers, 0, now);
        let partition = Partition {
            topic,
            index,
            dir: dir.to_path_buf(),
            config,
            metrics,
            shape: Shape::default(),
            state: Mutex::new(state),
            rounds: Mutex::new(()),
            jobs: Mutex::new(owner::Jobs::default()),
            durable: watch::Sender::new(Durability::new(end)),
            sync_wanted: Arc::new(Notify::new()),
            flusher_wakeups: AtomicU64::new(0),
            counters: PartitionCounters::default(),
        };
        partition.publish_shape(&partition.lock());
        Ok((partition, OpenReport { log: log_report, producers: producer_report }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the log consistent (appends roll back on
        // error), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The turn to replace the state files (see `rounds`); take it before [`Self::lock`].
    fn round_turn(&self) -> MutexGuard<'_, ()> {
        self.rounds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition index.
    pub fn index(&self) -> u32 {
        self.index
    }

    fn publish_shape(&self, st: &State) {
        self.shape.log_start.store(st.log.log_start_offset(), Relaxed);
        self.shape.end.store(st.log.end_offset().max(st.sink_next), Relaxed);
        self.shape.size.store(st.log.size_bytes(), Relaxed);
    }

    /// Offsets and size for metadata (lock-free). `end_offset` is the log end: the next
    /// offset to be assigned.
    pub fn metadata(&self, leader: u32) -> PartitionMetadata {
        PartitionMetadata {
            partition: self.index,
            leader,
            log_start_offset: self.shape.log_start.load(Relaxed),
            end_offset: self.shape.end.load(Relaxed),
            size_bytes: self.shape.size.load(Relaxed),
        }
    }

    /// The end offset known durable: offsets below it are fsync'd and may be read.
    pub fn durable_end(&self) -> i64 {
        self.durable.borrow().end
    }

    /// Durability as the flusher last published it.
    pub fn durability(&self) -> Durability {
        self.durable.borrow().clone()
    }

    /// Waits until every offset below `end` of generation `generation` (from
    /// [`Appended`]) is durable. Fails when the batch can no longer become durable: an
    /// fsync failed before covering it (it will be cut), or in-place recovery cut it —
    /// even if later appends reused its offsets and were fsync'd.
    pub async fn wait_durable(&self, end: i64, generation: u64) -> Result<(), String> {
        let mut rx = self.durable.subscribe();
        let mut asked = false;
        loop {
            {
                let d = rx.borrow_and_update();
                match d.verdict(end, generation) {
                    Verdict::Durable => return Ok(()),
                    Verdict::Cut(to) => {
                        return Err(format!(
                            "{}-{}: offsets from {to} were cut after a failed write or fsync; the batch is not stored",
                            self.topic, self.index
                        ))
                    }
                    Verdict::Failed => {
                        return Err(d.last_error.as_deref().unwrap_or("fsync failed").to_string());
                    }
                    Verdict::Pending => {}
                }
            }
            if !asked {
                self.sync_wanted.notify_one();
                asked = true;
            }
            rx.changed().await.map_err(|_| "partition closed".to_string())?;
        }
    }

    /// Waits until `offset` is durable, the log fails, or it is cut.
    async fn wait_readable(&self, offset: i64) {
        let mut rx = self.durable.subscribe();
        let generation = rx.borrow().generation;
        let mut asked = false;
        loop {
            {
                let d = rx.borrow_and_update();
                if d.end > offset || d.failed || d.generation != generation {
                    return;
                }
            }
            if !asked {
                self.sync_wanted.notify_one();
                asked = true;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whole batches from `offset`, at most about `max_bytes` (at least one batch), only
    /// below the durable end. When `offset` is stored but not durable yet, asks for a
    /// group commit and waits for it up to `max_wait` first; then answers what is durable
    /// (possibly nothing). [`LogError::OffsetOutOfRange`] outside `[log start, log end]`.
    /// The file is read on the blocking pool, outside the partition lock, once one of the
    /// broker-wide read slots ([`IoLimits::reads`]) is free.
    pub async fn read(
        self: &Arc<Self>,
        offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Fetched, LogError> {
        let end = self.shape.end.load(Relaxed);
        if !max_wait.is_zero() && offset >= self.durable_end() && offset < end {
            let _ = tokio::time::timeout(max_wait, self.wait_readable(offset)).await;
        }
        // One of the broker-wide read slots (never closed) for the blocking read.
        let slot = self.config.limits.reads.clone().acquire_owned().await.expect("read slots open");
        let p = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            p.read_blocking(offset, max_bytes)
        })
        .await
        .unwrap_or_else(|e| Err(task_failed("read task", e)))
    }

    /// [`Self::read`] without the wait, on the calling thread (blocking).
    pub fn read_blocking(&self, offset: i64, max_bytes: usize) -> Result<Fetched, LogError> {
        let (plan, high_watermark, durable_end, log_start_offset) = {
            let st = self.lock();
            let plan = st.log.read_plan(offset, max_bytes, ReadBound::Durable)?;
            (plan, st.log.end_offset(), st.log.durable_offset(), st.log.log_start_offset())
        };
        let batches = match plan {
            Some(plan) => plan.read()?,
            None => Bytes::new(),
        };
        Ok(Fetched { batches, high_watermark, durable_end, log_start_offset })
    }

    /// Whether the log refuses writes after a failure (until the flusher recovers it).
    pub fn is_failed(&self) -> bool {
        self.durable.borrow().failed
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Wakes the flusher, which then finds the partition gone and ends.
        self.sync_wanted.notify_one();
    }
}

impl State {
    fn new(log: PartitionLog, producers: ProducerStates, generation: u64, now_ms: i64) -> State {
        let end = log.end_offset();
        State { log, producers, sink_next: end, generation, snapshot: None, next_expiry_ms: now_ms }
    }
}
