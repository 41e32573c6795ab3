//! The producer engine.
//!
//! ```text
//! record ──► partitioner ──► accumulator (per-partition SegQueue)
//!        ──► core: batches (seal, compress) ─ window (sequences, in flight) ─ retry
//!                  links (connections, breaker) ─ metadata (leaders) ─ producer id
//!        ──► shell: sockets, timer, the partition's QUIC stream ──► broker
//! ```
//!
//! - [`ProducerRecord`] in, [`RecordMetadata`] (or a [`ProduceError`] saying whether the
//!   record may be stored) out: every record gets exactly one outcome (see `delivery`);
//! - enqueue takes no lock shared across partitions (see `accumulator`);
//! - every decision (sealing, sending, retrying, timeouts, reconnects, epoch bumps) is made
//!   by `core`, a deterministic state machine with no I/O and no clock, tested with a
//!   scripted broker; `shell` is the one task that owns the sockets and the timer and
//!   does what the core says;
//! - a partition's batches always travel on the same long-lived stream, and different
//!   partitions spread over several streams, so a lost packet on one partition's stream
//!   does not block another's.
//!
//! # Outcomes
//!
//! Every record gets exactly one outcome: its future resolves (or its callback runs) once,
//! whatever happens — a panicking callback or partitioner is caught and logged, records
//! offered after `close`, after fencing or after the driver stopped fail at once with the
//! reason, and a record whose delivery was lost track of reports
//! [`Persistence::PossiblyPersisted`]. A failure says whether the record may be stored
//! ([`Persistence`]). [`Producer::flush`] and [`Producer::close`] return `Ok(())` only when
//! every record they covered was acknowledged.
//!
//! # Dropping a producer
//!
//! Dropping the last handle without [`Producer::close`] loses nothing that was already
//! acknowledged, and the driver keeps delivering what was queued, in the background,
//! until it is delivered or its delivery timeout passes. But nothing waits for that: a
//! process that exits right after dropping the producer loses what was still queued.
//! Call `flush()` or `close(timeout)` before exiting.

// `SendError` hands the record back by value (the backpressure contract: the caller
// decides what to do with it), which makes the `Err` variant large; boxing it would
// hide the record behind an allocation for no gain on the success path.
#![allow(clippy::result_large_err)]

mod accumulator;
#[doc(hidden)]
pub mod bench_support;
mod clock;
pub mod config;
mod core;
mod delivery;
pub mod error;
pub mod metrics;
pub mod partitioner;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod record;
#[cfg(feature = "schema")]
mod schema;
mod shell;
#[cfg(feature = "schema")]
pub mod typed;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use accumulator::{record_size, Accumulator, MetadataAsk, QueuedRecord, TopicQueues, MAX_PENDING_TOPICS};
use clock::{Tick, WallClock};
use delivery::{stopped_error, BatchResults, Delivery};
use shell::{Command, Ended, Shell};

pub use accumulator::RECORD_OVERHEAD;
pub use config::{Backoff, ProducerBuilder, ProducerConfig, TlsConfig};
pub use delivery::Callback;
pub use error::{ErrorKind, Persistence, ProduceError, SendError};
pub use metrics::{LatencySummary, MetricsSnapshot};
pub use partitioner::{PartitionStrategy, Partitioner};
pub use record::{ProducerRecord, RecordMetadata};
#[cfg(feature = "schema")]
pub use typed::TypedProducer;

use crate::protocol::Record;
use crate::transport::tls::QuicTuning;
use crate::transport::ClientEndpoint;

struct Inner {
    cfg: Arc<ProducerConfig>,
    acc: Arc<Accumulator>,
    cmd: mpsc::UnboundedSender<Command>,
    partitioner: Arc<dyn Partitioner>,
    metrics: Arc<metrics::ProducerMetrics>,
    /// `close()` was called: new records are refused.
    closed: AtomicBool,
    /// How the driver ended, once it has.
    ended: Arc<Ended>,
    runtime: tokio::runtime::Handle,
    wall: Arc<WallClock>,
    /// Schema validation of records that name a subject (cargo feature `schema`).
    #[cfg(feature = "schema")]
    schemas: schema::ProducerSchemas,
}

/// A QUIC producer. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("client_id", &self.inner.cfg.client_id).finish_non_exhaustive()
    }
}

/// Resolves with a record's outcome once the broker acknowledges it (or it fails).
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata, ProduceError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or_else(|_| Err(stopped_error())))
    }
}

/// Resolves with the outcome of every record of a [`Producer::send_batch`], in order.
#[derive(Debug)]
pub struct BatchDelivery {
    rx: oneshot::Receiver<Vec<Result<RecordMetadata, ProduceError>>>,
    n: usize,
}

impl Future for BatchDelivery {
    type Output = Vec<Result<RecordMetadata, ProduceError>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let n = self.n;
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or_else(|_| (0..n).map(|_| Err(stopped_error())).collect()))
    }
}

impl ProducerBuilder {
    /// Validates the configuration and starts the producer's driver on the current tokio
    /// runtime. Connections are made in the background; the first `send` to a topic waits
    /// (up to `max_block`) for its metadata.
    pub fn build(self) -> Result<Producer, ProduceError> {
        let cfg = self.config;
        cfg.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ProduceError::new(
                ErrorKind::Config,
                Persistence::NotPersisted,
                "build() must be called inside a tokio runtime",
            )
        })?;
        let tls = cfg.tls.clone().expect("validated");
        let tuning = QuicTuning {
            idle_timeout: cfg.idle_timeout,
            keep_alive: Some(cfg.keep_alive),
            mtu_upper_bound: cfg.mtu_upper_bound,
            ..QuicTuning::default()
        };
        let cfg_err = |e: String| ProduceError::new(ErrorKind::Config, Persistence::NotPersisted, e);
        let quic = shell::quic_config(&tls, &tuning).map_err(cfg_err)?;
        let v6 = cfg.bootstrap.iter().all(|b| b.starts_with('['));
        let bind = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        let endpoint = ClientEndpoint::new(bind, quic, cfg.connect_timeout)
            .map_err(|e| cfg_err(format!("cannot bind a UDP socket: {e}")))?;
        let cfg = Arc::new(cfg);
        let acc = Arc::new(Accumulator::new(cfg.buffer_memory, cfg.batch_size));
        let metrics = Arc::new(metrics::ProducerMetrics::default());
        let partitioner = cfg.partitioner.build();
        let wall = Arc::new(WallClock::new());
        let ended = Arc::new(Ended::default());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let core = core::Core::new(cfg.clone(), acc.clone(), metrics.clone(), rand::random(), Tick::now());
        let shell = Shell::new(
            core,
            acc.clone(),
            partitioner.clone(),
            cmd_rx,
            endpoint,
            tls,
            tuning,
            wall.clone(),
            ended.clone(),
        );
        runtime.spawn(shell.run());
        #[cfg(feature = "schema")]
        let schemas = schema::ProducerSchemas::new(cfg.clone());
        Ok(Producer {
            inner: Arc::new(Inner {
                cfg,
                acc,
                cmd: cmd_tx,
                partitioner,
                metrics,
                closed: AtomicBool::new(false),
                ended,
                runtime,
                wall,
                #[cfg(feature = "schema")]
                schemas,
            }),
        })
    }
}

impl Producer {
    /// A builder with every default (see [`ProducerBuilder`]).
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder::default()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.cfg
    }

    /// Sends a record and waits for its acknowledgement.
    pub async fn send(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.enqueue(record).await.map_err(ProduceError::from)?.await
    }

    /// Enqueues a record (waiting up to `max_block` for metadata and buffer memory) and
    /// returns a future of its acknowledgement. Records enqueued by one task keep their
    /// order within a partition; await the futures later to pipeline.
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<DeliveryFuture, SendError> {
        let (tx, rx) = oneshot::channel();
        let slow = {
            let mut slot = Some((record, Delivery::future(tx)));
            match self.enqueue_fast(&mut slot) {
                Now::Done => return Ok(DeliveryFuture { rx }),
                now => self.enqueue_slow(now, slot),
            }
        };
        slow.await.map_err(|(e, d)| {
            d.disarm();
            e
        })?;
        Ok(DeliveryFuture { rx })
    }

    /// Enqueues a record; `callback` is called once with its outcome (on the producer's
    /// driver task: keep it short and non-blocking; a panic in it is caught and logged).
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata, ProduceError>) + Send + 'static,
    ) -> Result<(), SendError> {
        let slow = {
            let mut slot = Some((record, Delivery::callback(Box::new(callback))));
            match self.enqueue_fast(&mut slot) {
                Now::Done => return Ok(()),
                now => self.enqueue_slow(now, slot),
            }
        };
        // Refused before it was enqueued: the caller gets the error, the callback is not called.
        slow.await.map_err(|(e, d)| {
            d.disarm();
            e
        })
    }

    /// [`Producer::enqueue_now`] before any future of the slow path exists (unless a schema
    /// applies). The record stays in `slot` (one move from the caller's arguments) until
    /// it is pushed: a profile of 100 B records had a quarter of the producer thread in
    /// `memcpy`, records and deliveries moved by value through nested futures, closures
    /// and result enums.
    fn enqueue_fast(&self, slot: &mut Option<Pending>) -> Now {
        #[cfg(feature = "schema")]
        if slot.as_ref().is_some_and(|(r, _)| self.inner.schemas.applies(r)) {
            return Now::Wait;
        }
        self.enqueue_now(slot)
    }

    /// What follows [`Producer::enqueue_fast`] when it did not enqueue: the refusal, or
    /// [`Producer::enqueue_with`] (the schema step, waits for metadata and memory), boxed
    /// so that the common case carries none of it.
    fn enqueue_slow(&self, now: Now, slot: Option<Pending>) -> SlowEnqueue<'_> {
        let (record, delivery) = slot.expect("a record that was not enqueued is still in its slot");
        match now {
            Now::Refused(error) => Box::pin(std::future::ready(Err((SendError { error, record }, delivery)))),
            Now::Done | Now::Wait => Box::pin(self.enqueue_with(record, delivery)),
        }
    }

    /// Enqueues many records in order and returns one future for all their outcomes. A
    /// record that cannot be enqueued (too large, unknown topic, buffer full past
    /// `max_block`) gets its error in its slot; the others go on.
    pub async fn send_batch(&self, records: impl IntoIterator<Item = ProducerRecord>) -> BatchDelivery {
        let records: Vec<_> = records.into_iter().collect();
        let n = records.len();
        let (results, rx) = BatchResults::new(n);
        for (i, r) in records.into_iter().enumerate() {
            if let Err((e, d)) = self.enqueue_with(r, Delivery::batch(results.clone(), i)).await {
                d.complete(Err(e.error));
            }
        }
        if n == 0 {
            return BatchDelivery {
                rx: {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(Vec::new());
                    rx
                },
                n,
            };
        }
        BatchDelivery { rx, n }
    }

    /// Enqueues without waiting: when buffer memory is full (or the topic's metadata is
    /// not known yet; a fetch is started), the record is handed back.
    pub fn try_send(&self, record: ProducerRecord) -> Result<DeliveryFuture, SendError> {
        // A record validated and tagged here is handed back as it was given when a later
        // step refuses it.
        #[cfg(feature = "schema")]
        if self.inner.schemas.applies(&record) {
            let original = record.clone();
            let tagged = self.inner.schemas.apply_cached(record)?;
            return self.try_send_raw(tagged).map_err(|e| SendError { error: e.error, record: original });
        }
        self.try_send_raw(record)
    }

    fn try_send_raw(&self, record: ProducerRecord) -> Result<DeliveryFuture, SendError> {
        let (tx, rx) = oneshot::channel();
        let (record, size) = self.prepare(record)?;
        let Some(topic) = self.inner.acc.topic(&record.topic) else {
            // One request per topic until the driver answers it, however often this is called.
            let msg = match self.inner.acc.ask_metadata(&record.topic) {
                MetadataAsk::Full => format!(
                    "metadata for topic '{}' is not known and {MAX_PENDING_TOPICS} topics already wait for theirs",
                    record.topic
                ),
                ask => {
                    if ask == MetadataAsk::Ask {
                        let _ = self.inner.cmd.send(Command::Metadata { topic: record.topic.clone(), reply: None });
                    }
                    format!("metadata for topic '{}' is not known yet (fetching); try again", record.topic)
                }
            };
            return Err(SendError {
                error: ProduceError::new(ErrorKind::BufferFull, Persistence::NotPersisted, msg),
                record,
            });
        };
        let partition = match self.choose_partition(&topic, &record) {
            Ok(p) => p,
            Err(error) => return Err(SendError { error, record }),
        };
        let charge = self.charge(size);
        match self.inner.acc.memory.try_acquire_many(charge as u32) {
            Ok(permit) => permit.forget(),
            Err(e) => {
                let error = match e {
                    tokio::sync::TryAcquireError::Closed => self.ended_error(),
                    tokio::sync::TryAcquireError::NoPermits => ProduceError::new(
                        ErrorKind::BufferFull,
                        Persistence::NotPersisted,
                        format!("buffer memory full ({} bytes)", self.inner.cfg.buffer_memory),
                    ),
                };
                return Err(SendError { error, record });
            }
        }
        self.push(&topic, partition, record, size, charge, Delivery::future(tx));
        Ok(DeliveryFuture { rx })
    }

    /// Blocking `send` for code outside async contexts. Panics if called from within an
    /// async task (use `send` there).
    pub fn send_blocking(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.inner.runtime.block_on(self.send(record))
    }

    /// Blocking [`Producer::flush`] for code outside async contexts.
    pub fn flush_blocking(&self) -> Result<(), ProduceError> {
        self.inner.runtime.block_on(self.flush())
    }

    /// Seals every partition's batch now (cutting linger short, for as long as a flush
    /// waits) and resolves when every record enqueued before the call (its `send`/`enqueue`
    /// returned before `flush` was called) is acknowledged or failed. Records enqueued
    /// after the call, even from other tasks while it waits, are not waited for.
    ///
    /// Returns `Ok(())` when every one of those records was acknowledged. Otherwise an
    /// error: the first failure among them (its kind and persistence; the message says how
    /// many failed; each record's own outcome says which), or, if the producer cannot
    /// deliver any more (fenced, or its driver stopped), why. Records that had already
    /// failed before the call were reported by their own futures or callbacks and do not
    /// count. After [`Producer::close`] there is nothing left to flush: it returns what
    /// the close returned (`Ok(())` after a clean close, the close's error otherwise).
    pub async fn flush(&self) -> Result<(), ProduceError> {
        let (reply, rx) = oneshot::channel();
        let point = self.inner.acc.flush_point();
        if self.inner.cmd.send(Command::Flush { point, reply }).is_err() {
            return self.after_end();
        }
        rx.await.unwrap_or_else(|_| self.after_end())
    }

    /// Stops accepting records, flushes, and after `timeout` fails whatever is left with a
    /// `Closed` error; then the connections close. Any `timeout` is fine: `Duration::MAX`
    /// waits until everything is delivered or fails by its delivery timeout.
    ///
    /// Returns `Ok(())` when every record enqueued before the call was acknowledged;
    /// otherwise an error as [`Producer::flush`] describes (a record failed at the
    /// deadline says `Closed`). Calling it again returns what the first close returned:
    /// `Ok(())` after a clean close, the same error after an unclean one. A sender still
    /// waiting (for buffer memory or metadata) when `close` is called is refused with a
    /// `Closed` error, even if memory frees up before the close ends.
    pub async fn close(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let (reply, rx) = oneshot::channel();
        let point = self.inner.acc.flush_point();
        if self.inner.cmd.send(Command::Close { timeout, point, reply }).is_err() {
            return self.after_end();
        }
        rx.await.unwrap_or_else(|_| self.after_end())
    }

    /// Fails every record not yet written to the network (queued or waiting for its first
    /// send) with a `Closed` error; in-flight batches complete normally. Returns how many.
    pub async fn purge(&self) -> usize {
        let (reply, rx) = oneshot::channel();
        if self.inner.cmd.send(Command::Purge { reply }).is_ok() {
            rx.await.unwrap_or(0)
        } else {
            0
        }
    }

    /// The partition count of `topic`, fetching metadata if needed.
    pub async fn partitions_for(&self, topic: &str) -> Result<u32, ProduceError> {
        let t = self.topic_queues(&Arc::from(topic), deadline_in(self.inner.cfg.max_block)).await?;
        Ok(t.partitions.len() as u32)
    }

    /// A snapshot of counters, gauges and latency histograms.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot(self.inner.acc.memory.available_permits())
    }

    /// What flush/close report once the driver has ended (see `Ended`).
    fn after_end(&self) -> Result<(), ProduceError> {
        self.inner.ended.get().unwrap_or_else(|| Err(stopped_error()))
    }

    /// The error for a record offered after the driver ended.
    fn ended_error(&self) -> ProduceError {
        self.inner.acc.closed().unwrap_or_else(core::closed_error).with_persistence(Persistence::NotPersisted)
    }

    /// Buffer memory a record of `size` encoded bytes is charged (never more than all of it).
    fn charge(&self, size: usize) -> usize {
        (size + RECORD_OVERHEAD).min(self.inner.cfg.buffer_memory)
    }

    /// Refuses records after close or a fatal error, and records over `max_record_size`;
    /// returns the record with its encoded size.
    fn prepare(&self, record: ProducerRecord) -> Result<(ProducerRecord, usize), SendError> {
        match self.check(&record) {
            Ok(size) => Ok((record, size)),
            Err(error) => Err(SendError { error, record }),
        }
    }

    /// [`Producer::prepare`]'s checks on a borrowed record: its encoded size, or why it is
    /// refused.
    fn check(&self, record: &ProducerRecord) -> Result<usize, ProduceError> {
        if let Some(e) = self.inner.acc.closed() {
            return Err(e.with_persistence(Persistence::NotPersisted));
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(core::closed_error());
        }
        #[cfg(not(feature = "schema"))]
        if let Some(subject) = &record.schema_subject {
            let message =
                format!("record names schema subject '{subject}' but qwire was built without the `schema` feature");
            return Err(ProduceError::new(ErrorKind::Schema, Persistence::NotPersisted, message));
        }
        let size = size_of(record);
        if size > self.inner.cfg.max_record_size {
            return Err(ProduceError::new(
                ErrorKind::RecordTooLarge,
                Persistence::NotPersisted,
                format!("record of {size} bytes exceeds max_record_size {}", self.inner.cfg.max_record_size),
            ));
        }
        Ok(size)
    }

    async fn topic_queues(&self, topic: &Arc<str>, deadline: Instant) -> Result<Arc<TopicQueues>, ProduceError> {
        if let Some(t) = self.inner.acc.topic(topic) {
            return Ok(t);
        }
        let (reply, rx) = oneshot::channel();
        let sent = self.inner.cmd.send(Command::Metadata { topic: topic.clone(), reply: Some(reply) });
        if sent.is_err() {
            return Err(self.ended_error());
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.ended_error()),
            Err(_) => Err(ProduceError::new(
                ErrorKind::Transport,
                Persistence::NotPersisted,
                format!("no metadata for topic '{topic}' within max_block: is the broker reachable?"),
            )),
        }
    }

    fn choose_partition(&self, topic: &TopicQueues, record: &ProducerRecord) -> Result<u32, ProduceError> {
        let n = topic.partitions.len() as u32;
        let invalid = |msg: String| ProduceError::new(ErrorKind::InvalidRecord, Persistence::NotPersisted, msg);
        match record.partition {
            Some(p) if p < n => Ok(p),
            Some(p) => Err(invalid(format!("topic '{}' has {n} partitions; partition {p} does not exist", topic.name))),
            None => {
                // User code: a panic there is the record's error, not the caller's crash.
                let p = &self.inner.partitioner;
                match catch_unwind(AssertUnwindSafe(|| p.partition(&topic.name, record.key.as_deref(), n))) {
                    Ok(Ok(p)) if p < n => Ok(p),
                    Ok(Ok(p)) => Err(invalid(format!("the partitioner chose partition {p} of {n}"))),
                    Ok(Err(e)) => Err(invalid(e.to_string())),
                    Err(_) => {
                        Err(invalid(format!("the partitioner panicked choosing a partition of '{}'", topic.name)))
                    }
                }
            }
        }
    }

    /// Enqueues `record` after its schema check (a record with a schema subject is
    /// validated and tagged first); on refusal the delivery comes back with the error.
    async fn enqueue_with(&self, record: ProducerRecord, delivery: Delivery) -> Result<(), (SendError, Delivery)> {
        #[cfg(feature = "schema")]
        if self.inner.schemas.applies(&record) {
            let original = record.clone();
            let tagged = match self.inner.schemas.apply(record).await {
                Ok(r) => r,
                Err(e) => return Err((e, delivery)),
            };
            return self
                .enqueue_raw(tagged, delivery)
                .await
                .map_err(|(e, d)| (SendError { error: e.error, record: original }, d));
        }
        self.enqueue_raw(record, delivery).await
    }

    /// Enqueues `record` as it is (no schema step).
    async fn enqueue_raw(&self, record: ProducerRecord, delivery: Delivery) -> Result<(), (SendError, Delivery)> {
        let mut slot = Some((record, delivery));
        let now = self.enqueue_now(&mut slot);
        let (record, delivery) = match (now, slot) {
            (Now::Done, _) => return Ok(()),
            (Now::Refused(error), Some((record, delivery))) => return Err((SendError { error, record }, delivery)),
            (_, Some(pending)) => pending,
            (Now::Wait | Now::Refused(_), None) => unreachable!("a record that was not enqueued is still in its slot"),
        };
        match self.try_enqueue(record).await {
            Ok((topic, partition, record, size, charge)) => {
                self.push(&topic, partition, record, size, charge, delivery);
                Ok(())
            }
            Err(e) => Err((e, delivery)),
        }
    }

    /// The common case without waiting: the topic's metadata is known and buffer memory
    /// is free. Synchronous, on the thread's cached topic handle
    /// ([`Accumulator::with_topic`]). Anything that has to wait goes back to the caller
    /// untouched for [`Producer::try_enqueue`] (which checks again, then waits); a refusal
    /// is the one `try_enqueue` would give. Memory is taken before the partitioner runs
    /// (and given back if the record is refused) so that a record never consults the
    /// partitioner twice.
    fn enqueue_now(&self, slot: &mut Option<Pending>) -> Now {
        let Some((record, _)) = slot.as_ref() else { return Now::Wait };
        let size = match self.check(record) {
            Ok(size) => size,
            Err(e) => return Now::Refused(e),
        };
        let charge = self.charge(size);
        // The slot goes in by reference: the record is moved once, into the queue.
        let queued = self.inner.acc.with_topic(
            slot,
            |slot| slot.as_ref().map_or("", |(r, _)| &r.topic),
            |topic, slot| {
                if self.inner.acc.memory.try_acquire_many(charge as u32).map(|p| p.forget()).is_err() {
                    return Now::Wait;
                }
                let chosen = match slot.as_ref() {
                    Some((record, _)) => self.choose_partition(topic, record),
                    None => return Now::Wait,
                };
                match chosen {
                    Ok(partition) => {
                        let (record, delivery) = slot.take().expect("checked above");
                        self.push(topic, partition, record, size, charge, delivery);
                        Now::Done
                    }
                    Err(error) => {
                        self.inner.acc.release(charge);
                        Now::Refused(error)
                    }
                }
            },
        );
        queued.unwrap_or(Now::Wait)
    }

    /// Everything `enqueue` does before the push: checks, metadata, partition, memory.
    async fn try_enqueue(
        &self,
        record: ProducerRecord,
    ) -> Result<(Arc<TopicQueues>, u32, ProducerRecord, usize, usize), SendError> {
        let (record, size) = self.prepare(record)?;
        // The max_block deadline is only computed when something has to wait: the fast
        // path reads no clock here.
        let mut deadline = None;
        let mut deadline = || *deadline.get_or_insert_with(|| deadline_in(self.inner.cfg.max_block));
        let mut waited = false;
        let topic = match self.inner.acc.topic(&record.topic) {
            Some(t) => t,
            None => {
                waited = true;
                match self.topic_queues(&record.topic, deadline()).await {
                    Ok(t) => t,
                    Err(error) => return Err(SendError { error, record }),
                }
            }
        };
        let partition = match self.choose_partition(&topic, &record) {
            Ok(p) => p,
            Err(error) => return Err(SendError { error, record }),
        };
        let charge = self.charge(size);
        let mem = &self.inner.acc.memory;
        match mem.try_acquire_many(charge as u32) {
            Ok(p) => p.forget(),
            Err(_) => match tokio::time::timeout_at(deadline().into(), mem.acquire_many(charge as u32)).await {
                Ok(Ok(p)) => {
                    waited = true;
                    p.forget()
                }
                // The driver ended while this sender waited.
                Ok(Err(_)) => return Err(SendError { error: self.ended_error(), record }),
                Err(_) => {
                    return Err(SendError {
                        error: ProduceError::new(
                            ErrorKind::BufferFull,
                            Persistence::NotPersisted,
                            format!(
                                "buffer memory ({} bytes) stayed full for max_block ({:?})",
                                self.inner.cfg.buffer_memory, self.inner.cfg.max_block
                            ),
                        ),
                        record,
                    })
                }
            },
        }
        // `close()` may have been called while this sender waited: it stops accepting
        // records, so this one is refused (and its memory given back).
        if waited {
            let closed = self.inner.acc.closed().map(|e| e.with_persistence(Persistence::NotPersisted));
            let closed = closed.or_else(|| self.inner.closed.load(Ordering::SeqCst).then(core::closed_error));
            if let Some(error) = closed {
                self.inner.acc.release(charge);
                return Err(SendError { error, record });
            }
        }
        Ok((topic, partition, record, size, charge))
    }

    fn push(
        &self,
        topic: &TopicQueues,
        partition: u32,
        record: ProducerRecord,
        size: usize,
        charge: usize,
        delivery: Delivery,
    ) {
        // One clock read gives both the enqueue instant and, unless the record has one,
        // its timestamp.
        let enqueued = Tick::now();
        let ProducerRecord { key, value, headers, timestamp, .. } = record;
        let timestamp = timestamp.unwrap_or_else(|| self.inner.wall.ms_at(enqueued));
        let q = QueuedRecord { record: Record { timestamp, key, value, headers }, size, charge, delivery, enqueued };
        self.inner.acc.push(topic, partition, q);
    }
}

/// A record and its delivery on their way into a partition's queue.
type Pending = (ProducerRecord, Delivery);

/// The slow path of an enqueue ([`Producer::enqueue_slow`]).
type SlowEnqueue<'a> = Pin<Box<dyn Future<Output = Result<(), (SendError, Delivery)>> + Send + 'a>>;

/// What [`Producer::enqueue_now`] did with the record in its slot.
enum Now {
    /// Enqueued (the slot is empty).
    Done,
    /// Refused (the record is still in the slot; the caller gets it back with the error).
    Refused(ProduceError),
    /// Something has to wait: the record is still in the slot, untouched.
    Wait,
}

/// `max_block` from now, without overflow (`validate` caps it; this never panics anyway).
fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).or_else(|| now.checked_add(config::MAX_DURATION)).unwrap_or(now)
}

fn size_of(r: &ProducerRecord) -> usize {
    record_size(r.key.as_ref(), r.value.as_ref(), &r.headers)
}
