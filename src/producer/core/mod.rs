//! The producer's decisions as a deterministic state machine, in the style of quinn-proto's
//! `Connection`: no socket, no clock, no task is touched here. Inputs are `handle_*(now,
//! event)`; outputs are drained with `poll_transmit` (produce requests to write),
//! `poll_action` (connections to open, control requests, streams to reset, connections
//! to close), `poll_outcome` (record outcomes and answers to the producer handles) and
//! `poll_timeout` (when to call `handle_timeout` next). The async shell (`super::shell`)
//! owns the sockets and the timer and does what the outputs say.
//!
//! Where each decision lives:
//! - `batches`: where batches are sealed (batch size, linger, flush, a full window, the
//!   broker's frame limit) and handed to their partition's stream;
//! - `window`: one partition's in-flight window (sequence numbers, what may be sent, what
//!   may already be stored);
//! - `retry`: where a produce answer is decided: acked, retried, split, failed, fenced;
//! - `timeouts`: request timeouts (a stream that stopped answering) and delivery timeouts;
//! - `links` and `breaker`: connections per broker, reconnects, the circuit breaker;
//! - `metadata`: the topic table, partition leaders, metadata requests;
//! - `producer_id`: the producer id and epoch, epoch bumps, fencing.

mod batches;
pub(crate) mod breaker;
mod links;
mod metadata;
mod producer_id;
mod retry;
mod timeouts;
pub(crate) mod window;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::oneshot;

use super::accumulator::{Accumulator, QueuedRecord, TopicQueues};
use super::config::ProducerConfig;
use super::delivery::Delivery;
use super::error::{ErrorKind, Persistence, ProduceError};
use super::metrics::ProducerMetrics;
use crate::protocol::{Frame, Payload};
use crate::transport::TransportError;

pub(crate) use batches::{BatchPayload, RecordEntry};
use links::Links;
use metadata::Topics;
use producer_id::ProducerId;
use window::Slot;

/// The core's notion of time: a monotonic instant given by the shell (or a test).
pub(crate) type Tick = super::clock::Tick;

/// Where a topic's queues (or the failure to find them) are sent.
pub(crate) type MetadataReply = oneshot::Sender<Result<Arc<TopicQueues>, ProduceError>>;

/// Where the result of a flush or close is sent.
pub(crate) type FlushReply = oneshot::Sender<Result<(), ProduceError>>;

/// One connection attempt: broker link, connection slot, generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    /// Index of the broker link.
    pub link: usize,
    /// Connection slot within the link.
    pub slot: usize,
    /// Generation: increases with every (re)connect of the slot.
    pub gen: u64,
}

/// One data stream: its connection, its index there, and the generation of the QUIC
/// stream behind it (a reset stream is replaced by a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StreamId {
    /// The connection.
    pub conn: ConnId,
    /// Data stream index within the connection.
    pub index: usize,
    /// Generation of the QUIC stream.
    pub gen: u32,
}

/// What a broker said about itself in `HelloOk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HelloInfo {
    /// Its broker id.
    pub broker_id: u32,
    /// The largest frame it accepts.
    pub max_frame_size: usize,
    /// It resolves old-epoch batches per partition (see `producer_id`).
    pub per_partition_epochs: bool,
}

/// A produce request to write: the frame head, then the batch.
#[derive(Debug, Clone)]
pub(crate) struct Transmit {
    /// The data stream to write it to.
    pub stream: StreamId,
    /// Frame header and produce fields.
    pub head: Bytes,
    /// The record batch.
    pub batch: Bytes,
}

/// Something the shell must do besides writing produce requests.
#[derive(Debug)]
pub(crate) enum Action {
    /// Resolve `addr`, connect (QUIC + TLS + Hello) and open the data streams; answer with
    /// `handle_connected` or `handle_connect_failed`.
    Connect {
        /// The attempt.
        conn: ConnId,
        /// `host:port`.
        addr: String,
        /// Data streams to open.
        streams: usize,
        /// Read the TLS files again first.
        reload_tls: bool,
    },
    /// Send a control request on a fresh stream of `conn`; answer with `handle_control`.
    Call {
        /// Echoed in `handle_control`.
        tag: u64,
        /// The connection.
        conn: ConnId,
        /// The request.
        request: Payload,
        /// Give up after this long (the core has its own deadline too).
        timeout: Duration,
    },
    /// Reset this data stream and open a replacement with generation `gen + 1`; answer
    /// with `handle_stream_opened` (or a connection loss).
    ResetStream {
        /// The stream.
        stream: StreamId,
    },
    /// Close the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (sent to the broker).
        reason: &'static str,
    },
}

/// An answer for the producer handles.
pub(crate) enum Outcome {
    /// A batch was acknowledged: record `i` is at `base_offset + i`.
    Acked {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Offset of the first record (`None` with acks=none).
        base_offset: Option<i64>,
        /// The records, in order.
        records: Vec<RecordEntry>,
    },
    /// These records failed with `error`.
    Failed {
        /// Their deliveries.
        records: Vec<Delivery>,
        /// Why, and whether they may be stored.
        error: ProduceError,
    },
    /// A metadata request from a handle is answered.
    Metadata {
        /// Where to.
        reply: MetadataReply,
        /// The topic's queues, or why there are none.
        result: Result<Arc<TopicQueues>, ProduceError>,
    },
    /// A flush or close is done.
    Flushed {
        /// Where to.
        reply: FlushReply,
        /// `Ok` when every record it covered was acknowledged.
        result: Result<(), ProduceError>,
    },
    /// A purge is done.
    Purged {
        /// Where to.
        reply: oneshot::Sender<usize>,
        /// Records failed.
        count: usize,
    },
    /// A batch was sealed for this partition: the partitioner's hook (user code, so the
    /// shell calls it).
    Sealed {
        /// Topic.
        topic: Arc<str>,
        /// Partition sealed.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// The producer cannot go on (fenced): new records must fail with this at once.
    Fatal(ProduceError),
}

/// A control request waiting for its answer.
struct ControlCall {
    kind: ControlKind,
    /// When to give up on it.
    deadline: Option<Tick>,
}

/// What a control request was for.
enum ControlKind {
    /// Topics asked for, and the link the request went to.
    Metadata(Vec<Arc<str>>, usize),
    /// InitProducerId.
    InitPid,
}

/// A `flush()` or `close()` waiting for the records it covers.
struct FlushWaiter {
    /// Batches with an id below this are covered; `None` until the flush has sealed.
    target: Option<u64>,
    reply: FlushReply,
    /// Covered records that failed, and the first error.
    failed: u64,
    first_error: Option<ProduceError>,
}

/// The producer core. See the module docs.
pub(crate) struct Core {
    cfg: Arc<ProducerConfig>,
    acc: Arc<Accumulator>,
    metrics: Arc<ProducerMetrics>,
    rng: rand::rngs::StdRng,
    links: Links,
    topics: Topics,
    pid: ProducerId,
    control: HashMap<u64, ControlCall>,
    next_tag: u64,
    next_corr: u32,
    next_batch_id: u64,
    flush_all: bool,
    flushes: Vec<FlushWaiter>,
    /// Close deadline, once closing.
    closing: Option<Tick>,
    fatal: Option<ProduceError>,
    finished: bool,
    started: bool,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    outcomes: VecDeque<Outcome>,
}

impl Core {
    /// A core for `cfg`, draining `acc`; `seed` makes retry jitter reproducible.
    pub(crate) fn new(
        cfg: Arc<ProducerConfig>,
        acc: Arc<Accumulator>,
        metrics: Arc<ProducerMetrics>,
        seed: u64,
        now: Tick,
    ) -> Self {
        Core {
            links: Links::new(&cfg, now),
            topics: Topics::default(),
            pid: ProducerId::new(cfg.idempotence),
            cfg,
            acc,
            metrics,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            control: HashMap::new(),
            next_tag: 0,
            next_corr: 1,
            next_batch_id: 0,
            flush_all: false,
            flushes: Vec::new(),
            closing: None,
            fatal: None,
            finished: false,
            started: false,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            outcomes: VecDeque::new(),
        }
    }

    // ----------------------------------------------------------------------------------
    // Inputs
    // ----------------------------------------------------------------------------------

    /// A connection is ready (`HelloOk` received, data streams open).
    pub(crate) fn handle_connected(&mut self, now: Tick, conn: ConnId, hello: HelloInfo) {
        self.on_connected(now, conn, hello);
    }

    /// A connection attempt failed.
    pub(crate) fn handle_connect_failed(&mut self, now: Tick, conn: ConnId, error: TransportError) {
        self.on_connect_failed(now, conn, error);
    }

    /// An open connection broke (every stream of it is gone).
    pub(crate) fn handle_connection_lost(&mut self, now: Tick, conn: ConnId, error: TransportError) {
        self.on_connection_lost(now, conn, ProduceError::transport(error, Persistence::PossiblyPersisted));
    }

    /// One data stream failed or was finished by the broker.
    pub(crate) fn handle_stream_lost(&mut self, now: Tick, stream: StreamId, error: TransportError) {
        self.on_stream_lost(now, stream, error);
    }

    /// A replacement stream (after `Action::ResetStream`) is open.
    pub(crate) fn handle_stream_opened(&mut self, _now: Tick, stream: StreamId) {
        self.on_stream_opened(stream);
    }

    /// The shell wrote the next `frames` produce requests handed to `stream`.
    pub(crate) fn handle_written(&mut self, now: Tick, stream: StreamId, frames: usize) {
        self.on_written(now, stream, frames);
    }

    /// A response frame arrived on a data stream.
    pub(crate) fn handle_response(&mut self, now: Tick, stream: StreamId, frame: Frame) {
        self.on_response(now, stream, frame);
    }

    /// The answer to `Action::Call { tag, .. }`.
    pub(crate) fn handle_control(&mut self, now: Tick, tag: u64, result: Result<Payload, TransportError>) {
        self.on_control(now, tag, result);
    }

    /// A handle wants `topic`'s queues (`reply`), or just wants them fetched (`None`:
    /// `try_send`).
    pub(crate) fn handle_metadata_wanted(&mut self, now: Tick, topic: Arc<str>, reply: Option<MetadataReply>) {
        self.want_metadata(now, topic, reply);
    }

    /// `flush()`: seal everything now; answer when every record enqueued before is done.
    pub(crate) fn handle_flush(&mut self, _now: Tick, reply: FlushReply) {
        if let Some(e) = &self.fatal {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        self.flush_all = true;
        self.flushes.push(FlushWaiter { target: None, reply, failed: 0, first_error: None });
    }

    /// `close(timeout)`: flush, fail what is left at the deadline, then finish. `None`:
    /// every handle is gone (deliver within the delivery timeout, nobody to answer).
    pub(crate) fn handle_close(&mut self, now: Tick, timeout: Duration, reply: Option<FlushReply>) {
        let deadline = now + timeout;
        self.closing = Some(self.closing.map_or(deadline, |d| d.min(deadline)));
        self.flush_all = true;
        if let Some(reply) = reply {
            if let Some(e) = &self.fatal {
                let _ = reply.send(Err(e.clone()));
                return;
            }
            self.flushes.push(FlushWaiter { target: None, reply, failed: 0, first_error: None });
        }
    }

    /// `purge()`: fail every record not yet written (queued, or sealed but never sent).
    pub(crate) fn handle_purge(&mut self, now: Tick, reply: oneshot::Sender<usize>) {
        let count = self.purge(now);
        self.outcomes.push_back(Outcome::Purged { reply, count });
    }

    /// Runs every decision due at `now`: seals and sends what is due, fires request and
    /// delivery timeouts, starts connections and control requests, answers flushes and
    /// the close. The shell calls it after every batch of inputs and when the timer fires.
    pub(crate) fn handle_timeout(&mut self, now: Tick) {
        if self.finished {
            return;
        }
        if !self.started {
            self.started = true;
        }
        self.collect_ready(now);
        let flushing = self.flush_all || self.closing.is_some();
        self.seal(now, flushing);
        if self.flush_all {
            self.flush_all = false;
            let target = self.next_batch_id;
            for f in self.flushes.iter_mut().filter(|f| f.target.is_none()) {
                f.target = Some(target);
            }
        }
        self.resync_windows();
        self.send(now);
        self.check_timeouts(now);
        self.maintain_links(now);
        self.maybe_request_pid(now);
        self.refresh_metadata(now);
        self.finish_flushes();
        self.finish_close(now);
    }

    // ----------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------

    /// The next produce request to write.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next connection or control action.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next answer for the handles.
    pub(crate) fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    /// When `handle_timeout` must run next (even if nothing else happens).
    pub(crate) fn poll_timeout(&self, now: Tick) -> Option<Tick> {
        if self.finished {
            return None;
        }
        self.next_timeout(now)
    }

    /// True once closed (or fenced) and every answer was handed out: the shell stops.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished && self.outcomes.is_empty() && self.actions.is_empty()
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &ProducerConfig {
        &self.cfg
    }

    // ----------------------------------------------------------------------------------
    // Shared helpers
    // ----------------------------------------------------------------------------------

    fn next_timeout(&self, now: Tick) -> Option<Tick> {
        let mut d: Option<Tick> = None;
        let mut consider = |t: Tick| d = Some(d.map_or(t, |d| d.min(t)));
        for &(tid, p) in &self.topics.active {
            if let Some(since) = self.topics.list[tid as usize].parts[p as usize].since {
                consider(since + self.cfg.linger);
            }
        }
        for t in &self.topics.list {
            for p in &t.parts {
                if let Some(x) = p.window.next_ready_time() {
                    consider(x);
                }
            }
        }
        if let Some(x) = self.links.next_timeout(now) {
            consider(x);
        }
        if let Some(c) = self.closing {
            consider(c);
        }
        if let Some(x) = self.pid.retry_at() {
            consider(x);
        }
        if let Some(x) = self.topics.refresh_due {
            consider(x);
        }
        for x in self.timeout_deadlines() {
            consider(x);
        }
        // Nothing is due: wake up now and then anyway (cheap, and bounds any missed case).
        consider(now + Duration::from_millis(200));
        d
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn jitter(&mut self) -> f64 {
        use rand::Rng;
        self.rng.gen::<f64>()
    }

    /// Sends a control request on an open connection (preferring `prefer`'s link);
    /// false if none is open.
    fn call(&mut self, now: Tick, prefer: Option<usize>, request: Payload, kind: ControlKind) -> bool {
        let Some(conn) = self.links.control_conn(prefer) else { return false };
        let kind = match kind {
            ControlKind::Metadata(topics, _) => ControlKind::Metadata(topics, conn.link),
            k => k,
        };
        let tag = self.tag();
        let timeout = self.cfg.request_timeout + timeouts::margin(self.cfg.request_timeout);
        self.control.insert(tag, ControlCall { kind, deadline: Some(now + timeout) });
        self.actions.push_back(Action::Call { tag, conn, request, timeout });
        true
    }

    fn on_control(&mut self, now: Tick, tag: u64, result: Result<Payload, TransportError>) {
        let Some(call) = self.control.remove(&tag) else { return };
        match call.kind {
            ControlKind::InitPid => self.on_init_pid(now, result),
            ControlKind::Metadata(topics, link) => self.on_metadata_answer(now, topics, link, result),
        }
    }

    /// Records a record failure against the flushes that cover it (batch `id`, or `None`
    /// for a record that was still queued).
    fn note_failures(&mut self, id: Option<u64>, n: u64, err: &ProduceError) {
        for f in &mut self.flushes {
            let covered = match (f.target, id) {
                (None, _) => true,
                (Some(t), Some(id)) => id < t,
                (Some(_), None) => false,
            };
            if covered {
                f.failed += n;
                f.first_error.get_or_insert_with(|| err.clone());
            }
        }
    }

    /// Fails every record of a batch; the persistence reported follows what is known.
    fn fail_slot(&mut self, s: Slot<BatchPayload>, err: ProduceError) {
        let persistence = match err.persistence() {
            Persistence::Persisted => Persistence::Persisted,
            _ if s.may_be_stored() => Persistence::PossiblyPersisted,
            p => p,
        };
        let err = err.with_persistence(persistence);
        self.acc.release(s.payload.memory);
        let n = s.payload.records.len() as u64;
        ProducerMetrics::add(&self.metrics.records_failed, n);
        self.metrics.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
        self.note_failures(Some(s.id), n, &err);
        let records = s.payload.records.into_iter().map(|r| r.delivery).collect();
        self.outcomes.push_back(Outcome::Failed { records, error: err });
    }

    /// Fails records still in a partition's queue (never sealed).
    fn fail_queued(&mut self, tid: usize, p: usize, err: &ProduceError) -> usize {
        let q = self.topics.list[tid].queues.partitions[p].clone();
        let mut failed: Vec<QueuedRecord> = self.topics.list[tid].parts[p].carry.take().into_iter().collect();
        while let Some(r) = q.queue.pop() {
            q.queued_bytes.fetch_sub(r.size, Ordering::AcqRel);
            failed.push(r);
        }
        self.fail_records(failed, err)
    }

    /// Fails records that never made it into a batch.
    fn fail_records(&mut self, records: Vec<QueuedRecord>, err: &ProduceError) -> usize {
        let n = records.len();
        if n == 0 {
            return 0;
        }
        let err = err.clone().with_persistence(Persistence::NotPersisted);
        let mut deliveries = Vec::with_capacity(n);
        for r in records {
            self.acc.release(r.charge);
            deliveries.push(r.delivery);
        }
        ProducerMetrics::add(&self.metrics.records_failed, n as u64);
        self.note_failures(None, n as u64, &err);
        self.outcomes.push_back(Outcome::Failed { records: deliveries, error: err });
        n
    }

    /// Fails every queued and pending record with `err` (close deadline, fatal error).
    fn fail_everything(&mut self, err: ProduceError) {
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                self.fail_queued(tid, p, &err);
                let slots = self.topics.list[tid].parts[p].window.drain_all();
                for s in slots {
                    self.fail_slot(s, err.clone());
                }
            }
        }
    }

    /// Purge: fail what has not been written yet (queued records and batches waiting
    /// to be sent for the first time).
    fn purge(&mut self, _now: Tick) -> usize {
        let err = ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "record purged before it was sent");
        let mut n = 0;
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                n += self.fail_queued(tid, p, &err);
                // Never sent, so never numbered: the sequence has no gap.
                let gone = self.topics.list[tid].parts[p].window.take(|s| s.attempts == 0);
                for s in gone {
                    n += s.payload.records.len();
                    self.fail_slot(s, err.clone());
                }
            }
        }
        n
    }

    fn is_idle(&self) -> bool {
        self.topics.list.iter().all(|t| {
            t.parts.iter().enumerate().all(|(i, p)| {
                p.window.is_empty()
                    && p.carry.is_none()
                    && t.queues.partitions[i].queued_bytes.load(Ordering::Acquire) == 0
            })
        })
    }

    fn finish_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest = self.topics.list.iter().flat_map(|t| t.parts.iter()).filter_map(|p| p.window.oldest_id()).min();
        let mut i = 0;
        while i < self.flushes.len() {
            let done = self.flushes[i].target.is_some_and(|t| oldest.is_none_or(|o| o >= t));
            if done {
                let f = self.flushes.swap_remove(i);
                self.answer_flush(f);
            } else {
                i += 1;
            }
        }
    }

    fn answer_flush(&mut self, f: FlushWaiter) {
        let result = match (&self.fatal, f.first_error) {
            (Some(e), _) => Err(e.clone()),
            (None, None) => Ok(()),
            (None, Some(e)) => {
                let msg = format!("{} of the records it covered failed; the first: {}", f.failed, e.message());
                Err(ProduceError::new(e.kind(), e.persistence(), msg))
            }
        };
        self.outcomes.push_back(Outcome::Flushed { reply: f.reply, result });
    }

    /// Everything delivered, or the close deadline passed (then what is left fails).
    fn finish_close(&mut self, now: Tick) {
        let Some(deadline) = self.closing else { return };
        let idle = self.is_idle();
        if !idle && now < deadline {
            return;
        }
        if !idle {
            let err = ProduceError::new(
                ErrorKind::Closed,
                Persistence::NotPersisted,
                "producer closed before the record was delivered",
            );
            self.fail_everything(err);
        }
        self.finish(now);
    }

    /// Answers everything still waiting and stops.
    fn finish(&mut self, now: Tick) {
        for f in std::mem::take(&mut self.flushes) {
            self.answer_flush(f);
        }
        let err = self.fatal.clone().unwrap_or_else(closed_error);
        for reply in self.topics.take_waiters() {
            self.outcomes.push_back(Outcome::Metadata { reply, result: Err(err.clone()) });
        }
        for conn in self.links.open_conns() {
            self.actions.push_back(Action::Close { conn, reason: "producer closed" });
        }
        self.links.shut_all(now);
        self.finished = true;
    }
}

/// The error for records refused because the producer is closed.
pub(crate) fn closed_error() -> ProduceError {
    ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "producer closed")
}
