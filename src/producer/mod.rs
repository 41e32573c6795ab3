//! The producer engine.
//!
//! ```text
//! send() ──► partitioner ──► per-partition SegQueue ──► driver: seal batch (compress)
//!                                                        ──► in-flight window (seq, retries)
//!                                                        ──► partition's QUIC stream ──► broker
//! ```
//!
//! - [`ProducerRecord`] in, [`RecordMetadata`] (or a [`ProduceError`] saying whether the
//!   record may be stored) out;
//! - enqueue takes no lock shared across partitions (see `accumulator`);
//! - one driver task owns batches, windows and connections (see `driver`);
//! - a partition's batches always travel on the same long-lived stream, and different
//!   partitions spread over several streams, so a lost packet on one partition's stream
//!   does not block another's.
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
mod clock;
pub mod config;
mod driver;
pub mod error;
pub mod metrics;
pub mod partitioner;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod record;
mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};

use accumulator::{record_size, Accumulator, BatchResults, Delivery, QueuedRecord, TopicQueues};
use clock::{Tick, WallClock};
use driver::{Command, Driver, PidState};

pub use accumulator::Callback;
pub use config::{Backoff, ProducerBuilder, ProducerConfig, TlsConfig};
pub use error::{ErrorKind, Persistence, ProduceError, SendError};
pub use metrics::{LatencySummary, MetricsSnapshot};
pub use partitioner::{PartitionStrategy, Partitioner};
pub use record::{ProducerRecord, RecordMetadata};

use crate::protocol::Record;
use crate::transport::tls::{client_tls, quinn_client_config, QuicTuning};
use crate::transport::ClientEndpoint;

struct Inner {
    cfg: Arc<ProducerConfig>,
    acc: Arc<Accumulator>,
    cmd: mpsc::UnboundedSender<Command>,
    partitioner: Arc<dyn Partitioner>,
    metrics: Arc<metrics::ProducerMetrics>,
    closed: AtomicBool,
    runtime: tokio::runtime::Handle,
    wall: Arc<WallClock>,
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
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(ProduceError::new(
                    ErrorKind::Closed,
                    Persistence::PossiblyPersisted,
                    "the producer stopped before reporting this record",
                ))
            })
        })
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
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                (0..n)
                    .map(|_| {
                        Err(ProduceError::new(
                            ErrorKind::Closed,
                            Persistence::PossiblyPersisted,
                            "the producer stopped before reporting this record",
                        ))
                    })
                    .collect()
            })
        })
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
        let tls = cfg.tls.as_ref().expect("validated");
        let tuning = QuicTuning {
            idle_timeout: cfg.idle_timeout,
            keep_alive: Some(cfg.keep_alive),
            mtu_upper_bound: cfg.mtu_upper_bound,
            ..QuicTuning::default()
        };
        let cfg_err = |e: String| ProduceError::new(ErrorKind::Config, Persistence::NotPersisted, e);
        let rustls = client_tls(Some(&tls.identity), &tls.ca).map_err(|e| cfg_err(e.to_string()))?;
        let quic = quinn_client_config(rustls, &tuning).map_err(|e| cfg_err(e.to_string()))?;
        let v6 = cfg.bootstrap.iter().all(|b| b.starts_with('['));
        let bind = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        let endpoint = ClientEndpoint::new(bind, quic, cfg.connect_timeout)
            .map_err(|e| cfg_err(format!("cannot bind a UDP socket: {e}")))?;
        let cfg = Arc::new(cfg);
        let acc = Arc::new(Accumulator::new(cfg.buffer_memory, cfg.batch_size));
        let metrics = Arc::new(metrics::ProducerMetrics::default());
        let partitioner = cfg.partitioner.build();
        let wall = Arc::new(WallClock::new());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            cfg: cfg.clone(),
            acc: acc.clone(),
            metrics: metrics.clone(),
            partitioner: partitioner.clone(),
            cmd_rx,
            cmd_closed: false,
            ev_tx,
            ev_rx,
            endpoint,
            links: Vec::new(),
            topics: Vec::new(),
            topic_ids: Default::default(),
            active: Vec::new(),
            pid: if cfg.idempotence { PidState::Missing { requested: false } } else { PidState::Off },
            pid_retry_at: Instant::now(),
            next_batch_id: 0,
            next_corr: 1,
            next_tag: 0,
            control: Default::default(),
            metadata_waiters: Default::default(),
            metadata_due: None,
            flush_all_now: false,
            flushes: Vec::new(),
            closing: None,
            rng: rand::rngs::StdRng::from_entropy(),
            wall: wall.clone(),
        };
        runtime.spawn(driver.run());
        Ok(Producer {
            inner: Arc::new(Inner {
                cfg,
                acc,
                cmd: cmd_tx,
                partitioner,
                metrics,
                closed: AtomicBool::new(false),
                runtime,
                wall,
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
        self.enqueue_with(record, Delivery::Future(tx)).await?;
        Ok(DeliveryFuture { rx })
    }

    /// Enqueues a record; `callback` is called once with its outcome (on the producer's
    /// driver task: keep it short and non-blocking).
    pub async fn send_with_callback(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata, ProduceError>) + Send + 'static,
    ) -> Result<(), SendError> {
        self.enqueue_with(record, Delivery::Callback(Box::new(callback))).await
    }

    /// Enqueues many records in order and returns one future for all their outcomes. A
    /// record that cannot be enqueued (too large, unknown topic, buffer full past
    /// `max_block`) gets its error in its slot; the others go on.
    pub async fn send_batch(&self, records: impl IntoIterator<Item = ProducerRecord>) -> BatchDelivery {
        let records: Vec<_> = records.into_iter().collect();
        let n = records.len();
        let (results, rx) = BatchResults::new(n);
        for (i, r) in records.into_iter().enumerate() {
            if let Err(e) = self.enqueue_with(r, Delivery::Batch(results.clone(), i)).await {
                Delivery::Batch(results.clone(), i).complete(Err(e.error));
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
        let (tx, rx) = oneshot::channel();
        let (record, size) = self.prepare(record)?;
        let Some(topic) = self.inner.acc.topic(&record.topic) else {
            let (reply, _) = oneshot::channel();
            let _ = self.inner.cmd.send(Command::Metadata { topic: record.topic.clone(), reply });
            return Err(SendError {
                error: ProduceError::new(
                    ErrorKind::BufferFull,
                    Persistence::NotPersisted,
                    format!("metadata for topic '{}' is not known yet (fetching); try again", record.topic),
                ),
                record,
            });
        };
        let partition = match self.choose_partition(&topic, &record) {
            Ok(p) => p,
            Err(error) => return Err(SendError { error, record }),
        };
        match self.inner.acc.memory.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(_) => {
                return Err(SendError {
                    error: ProduceError::new(
                        ErrorKind::BufferFull,
                        Persistence::NotPersisted,
                        format!("buffer memory full ({} bytes)", self.inner.cfg.buffer_memory),
                    ),
                    record,
                })
            }
        }
        self.push(&topic, partition, record, size, Delivery::Future(tx));
        Ok(DeliveryFuture { rx })
    }

    /// Blocking `send` for code outside async contexts. Panics if called from within an
    /// async task (use `send` there).
    pub fn send_blocking(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.inner.runtime.block_on(self.send(record))
    }

    /// Blocking `flush` for code outside async contexts.
    pub fn flush_blocking(&self) {
        self.inner.runtime.block_on(self.flush())
    }

    /// Seals every partition's batch now (cutting linger short) and resolves when every
    /// record enqueued before the call is acknowledged or failed.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.cmd.send(Command::Flush { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops accepting records, flushes, and after `timeout` fails whatever is left with a
    /// `Closed` error; then the connections close.
    pub async fn close(&self, timeout: Duration) {
        self.inner.closed.store(true, Ordering::Release);
        let (reply, rx) = oneshot::channel();
        if self.inner.cmd.send(Command::Close { timeout, reply }).is_ok() {
            let _ = rx.await;
        }
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
        let t = self.topic_queues(&Arc::from(topic), Instant::now() + self.inner.cfg.max_block).await?;
        Ok(t.partitions.len() as u32)
    }

    /// A snapshot of counters, gauges and latency histograms.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot(self.inner.acc.memory.available_permits())
    }

    /// Refuses records after close and records over `max_record_size`; returns the record
    /// with the size charged against buffer memory.
    fn prepare(&self, record: ProducerRecord) -> Result<(ProducerRecord, usize), SendError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SendError { error: driver::closed_error(), record });
        }
        let size = size_of(&record);
        if size > self.inner.cfg.max_record_size {
            return Err(SendError {
                error: ProduceError::new(
                    ErrorKind::RecordTooLarge,
                    Persistence::NotPersisted,
                    format!("record of {size} bytes exceeds max_record_size {}", self.inner.cfg.max_record_size),
                ),
                record,
            });
        }
        Ok((record, size))
    }

    async fn topic_queues(&self, topic: &Arc<str>, deadline: Instant) -> Result<Arc<TopicQueues>, ProduceError> {
        if let Some(t) = self.inner.acc.topic(topic) {
            return Ok(t);
        }
        let (reply, rx) = oneshot::channel();
        self.inner.cmd.send(Command::Metadata { topic: topic.clone(), reply }).map_err(|_| driver::closed_error())?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(driver::closed_error()),
            Err(_) => Err(ProduceError::new(
                ErrorKind::Transport,
                Persistence::NotPersisted,
                format!("no metadata for topic '{topic}' within max_block: is the broker reachable?"),
            )),
        }
    }

    fn choose_partition(&self, topic: &TopicQueues, record: &ProducerRecord) -> Result<u32, ProduceError> {
        let n = topic.partitions.len() as u32;
        match record.partition {
            Some(p) if p < n => Ok(p),
            Some(p) => Err(ProduceError::new(
                ErrorKind::InvalidRecord,
                Persistence::NotPersisted,
                format!("topic '{}' has {n} partitions; partition {p} does not exist", topic.name),
            )),
            None => self
                .inner
                .partitioner
                .partition(&topic.name, record.key.as_deref(), n)
                .map_err(|e| ProduceError::new(ErrorKind::InvalidRecord, Persistence::NotPersisted, e.to_string())),
        }
    }

    async fn enqueue_with(&self, record: ProducerRecord, delivery: Delivery) -> Result<(), SendError> {
        let (record, size) = self.prepare(record)?;
        // The max_block deadline is only computed when something has to wait: the fast
        // path reads no clock here.
        let mut deadline = None;
        let mut deadline = || *deadline.get_or_insert_with(|| Instant::now() + self.inner.cfg.max_block);
        let topic = match self.inner.acc.topic(&record.topic) {
            Some(t) => t,
            None => match self.topic_queues(&record.topic, deadline()).await {
                Ok(t) => t,
                Err(error) => return Err(SendError { error, record }),
            },
        };
        let partition = match self.choose_partition(&topic, &record) {
            Ok(p) => p,
            Err(error) => return Err(SendError { error, record }),
        };
        let mem = &self.inner.acc.memory;
        match mem.try_acquire_many(size as u32) {
            Ok(p) => p.forget(),
            Err(_) => match tokio::time::timeout_at(deadline().into(), mem.acquire_many(size as u32)).await {
                Ok(Ok(p)) => p.forget(),
                _ => {
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
        self.push(&topic, partition, record, size, delivery);
        Ok(())
    }

    fn push(&self, topic: &TopicQueues, partition: u32, record: ProducerRecord, size: usize, delivery: Delivery) {
        // One clock read gives both the enqueue instant and, unless the record has one,
        // its timestamp.
        let enqueued = Tick::now();
        let ProducerRecord { key, value, headers, timestamp, .. } = record;
        let timestamp = timestamp.unwrap_or_else(|| self.inner.wall.ms_at(enqueued));
        let q = QueuedRecord { record: Record { timestamp, key, value, headers }, size, delivery, enqueued };
        self.inner.acc.push(topic, partition, q);
    }
}

fn size_of(r: &ProducerRecord) -> usize {
    record_size(r.key.as_ref(), r.value.as_ref(), &r.headers)
}

/// Hooks for the criterion benches in `benches/` (not a stable API).
#[doc(hidden)]
pub mod bench_support {
    use std::sync::Arc;

    use super::accumulator::{Accumulator, Delivery, PartitionQueue, QueuedRecord, TopicQueues};
    use super::clock::Tick;
    use super::window::Window;
    use crate::protocol::Record;

    /// An accumulator with one topic of `partitions` partitions.
    pub struct Queues {
        acc: Accumulator,
        topic: Arc<TopicQueues>,
    }

    impl Queues {
        /// A new accumulator.
        pub fn new(partitions: u32) -> Queues {
            let topic = Arc::new(TopicQueues {
                id: 0,
                name: "bench".into(),
                partitions: (0..partitions).map(|_| Arc::new(PartitionQueue::default())).collect(),
            });
            let acc = Accumulator::new(usize::MAX >> 4, 64 * 1024);
            acc.publish(topic.clone());
            Queues { acc, topic }
        }

        /// Enqueues like `send` does after partitioning (topic lookup included).
        pub fn push(&self, partition: u32, record: Record) {
            let t = self.acc.topic("bench").expect("published");
            let size = super::accumulator::record_size(record.key.as_ref(), record.value.as_ref(), &record.headers);
            let q =
                QueuedRecord { record, size, delivery: Delivery::Callback(Box::new(|_| {})), enqueued: Tick::now() };
            self.acc.push(&t, partition, q);
        }

        /// Pops everything queued (as the driver does when sealing); returns the count.
        pub fn drain(&self) -> usize {
            let mut n = 0;
            while self.acc.ready.pop().is_some() {}
            for q in &self.topic.partitions {
                while let Some(r) = q.queue.pop() {
                    q.queued_bytes.fetch_sub(r.size, std::sync::atomic::Ordering::AcqRel);
                    n += 1;
                }
            }
            n
        }
    }

    /// One partition window's full cycle for `batches` batches: push, send, acknowledge
    /// the oldest in-flight batch whenever five are in flight (as responses arrive in
    /// order on a stream).
    pub fn window_cycle(batches: u32) -> u64 {
        let now = std::time::Instant::now();
        let mut w = Window::new(true, 5);
        let mut in_flight = std::collections::VecDeque::new();
        let mut acked = 0u64;
        let mut corr = 0u32;
        for id in 0..batches {
            w.push(u64::from(id), 100, id, now);
            while let Some(i) = w.next_sendable(now, false) {
                w.mark_sent(i, corr, 1, now);
                in_flight.push_back(corr);
                corr += 1;
            }
            if in_flight.len() == 5 {
                let c = in_flight.pop_front().expect("five in flight");
                acked += u64::from(w.complete(c).expect("in flight").records);
            }
        }
        while let Some(c) = in_flight.pop_front() {
            acked += u64::from(w.complete(c).expect("in flight").records);
        }
        acked
    }
}
