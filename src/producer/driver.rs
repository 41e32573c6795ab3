//! The driver task: the only owner of mutable producer state.
//!
//! It seals batches out of the accumulator, keeps each partition's in-flight window,
//! writes produce frames to the partition's stream, matches responses, retries, bumps the
//! producer epoch when sequences break, reconnects with back-off behind a per-broker
//! circuit breaker, and serves `flush` / `close` / `purge` / metadata commands. Producer
//! handles talk to it through channels; nothing here is locked across an `.await`.
//!
//! Each wake-up does bounded work: drain events, seal what is due, send what the windows
//! allow, check timers; then it sleeps until the next deadline or notification.

mod batches;
mod connections;
mod responses;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::accumulator::{Accumulator, QueuedRecord, TopicQueues};
use super::clock::{Tick, WallClock};
use super::config::ProducerConfig;
use super::error::{ErrorKind, Persistence, ProduceError};
use super::metrics::ProducerMetrics;
use super::partitioner::Partitioner;
use super::window::{Slot, Window};
use crate::protocol::ProducerStamp;
use crate::transport::pool::PoolEvent;
use crate::transport::ClientEndpoint;

pub(crate) use connections::closed_error;
use connections::Link;

/// Where a topic's queues (or the failure to find them) are sent.
pub(crate) type MetadataReply = oneshot::Sender<Result<Arc<TopicQueues>, ProduceError>>;

/// Requests from producer handles.
pub(crate) enum Command {
    /// Resolve a topic's queues (fetching metadata if needed).
    Metadata { topic: Arc<str>, reply: MetadataReply },
    /// Seal everything now; answer when every batch sealed so far is done.
    Flush { reply: oneshot::Sender<()> },
    /// Flush, then fail what is left at the deadline, then stop.
    Close { timeout: Duration, reply: oneshot::Sender<()> },
    /// Fail every record not yet sent; answers how many.
    Purge { reply: oneshot::Sender<usize> },
}

/// A sealed batch as the window keeps it.
pub(crate) struct BatchPayload {
    /// The sealed batch bytes, stamped with `stamp`.
    pub bytes: Bytes,
    /// The idempotence fields currently in `bytes`.
    pub stamp: ProducerStamp,
    /// Per record: delivery, timestamp, enqueue time.
    pub records: Vec<(super::accumulator::Delivery, i64, Tick)>,
    /// Buffer memory held.
    pub memory: usize,
    /// Enqueue time of the oldest record (delivery timeout runs from here).
    pub first_enqueued: Tick,
    /// When the batch was last written to a stream.
    pub written_at: Option<Instant>,
}

pub(crate) struct PartState {
    pub window: Window<BatchPayload>,
    /// A record popped but not fitting the previous batch.
    pub carry: Option<QueuedRecord>,
    /// When the driver first saw data waiting (linger starts).
    pub since: Option<Instant>,
    pub active: bool,
    /// Data stream index within the connection (fixed per partition).
    pub stream: usize,
    /// Index of the link of the partition's leader.
    pub link: usize,
}

pub(crate) struct TopicState {
    pub queues: Arc<TopicQueues>,
    pub parts: Vec<PartState>,
}

/// Producer id state for idempotence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidState {
    /// Idempotence is off.
    Off,
    /// No id yet; `requested` while an InitProducerId is out.
    Missing { requested: bool },
    /// Ready to stamp batches.
    Ready { id: i64, epoch: i16 },
    /// A sequence broke: drain unresolved batches, then bump.
    Bumping { id: i64, epoch: i16, requested: bool },
    /// Fenced by a newer producer: fatal.
    Fenced,
}

pub(crate) struct Driver {
    pub cfg: Arc<ProducerConfig>,
    pub acc: Arc<Accumulator>,
    pub metrics: Arc<ProducerMetrics>,
    pub partitioner: Arc<dyn Partitioner>,
    pub cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub cmd_closed: bool,
    pub ev_tx: mpsc::UnboundedSender<PoolEvent>,
    pub ev_rx: mpsc::UnboundedReceiver<PoolEvent>,
    pub endpoint: ClientEndpoint,
    pub links: Vec<Link>,
    pub topics: Vec<TopicState>,
    pub topic_ids: HashMap<Arc<str>, u32>,
    pub active: Vec<(u32, u32)>,
    pub pid: PidState,
    pub pid_retry_at: Instant,
    pub next_batch_id: u64,
    pub next_corr: u32,
    pub next_tag: u64,
    pub control: HashMap<u64, connections::ControlKind>,
    pub metadata_waiters: HashMap<Arc<str>, Vec<MetadataReply>>,
    pub metadata_due: Option<Instant>,
    pub flush_all_now: bool,
    pub flushes: Vec<(u64, oneshot::Sender<()>)>,
    pub closing: Option<(Instant, Vec<oneshot::Sender<()>>)>,
    pub rng: rand::rngs::StdRng,
    pub wall: Arc<WallClock>,
}

impl Driver {
    /// Runs until closed (or every handle is dropped and everything is delivered).
    pub(crate) async fn run(mut self) {
        self.start_links(Instant::now());
        loop {
            let deadline = self.next_deadline(Instant::now());
            tokio::select! {
                biased;
                cmd = self.cmd_rx.recv(), if !self.cmd_closed => match cmd {
                    Some(c) => self.on_command(c),
                    None => {
                        // Every handle is gone: deliver what is queued, within the delivery
                        // timeout, then stop (documented on `Producer`).
                        self.cmd_closed = true;
                        self.begin_close(self.cfg.delivery_timeout, None);
                    }
                },
                Some(ev) = self.ev_rx.recv() => self.on_event(ev),
                _ = self.acc.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            // Bounded catch-up on whatever else is waiting.
            for _ in 0..4096 {
                match self.ev_rx.try_recv() {
                    Ok(ev) => self.on_event(ev),
                    Err(_) => break,
                }
            }
            while let Ok(c) = self.cmd_rx.try_recv() {
                self.on_command(c);
            }
            let now = Instant::now();
            let tick = Tick::now();
            self.wall.rebase_if_due(tick);
            self.collect_ready(now);
            let flushing = self.flush_all_now || self.closing.is_some();
            self.seal(now, tick, flushing);
            if self.flush_all_now {
                self.flush_all_now = false;
                let target = self.next_batch_id;
                for f in self.flushes.iter_mut().filter(|f| f.0 == u64::MAX) {
                    f.0 = target;
                }
            }
            self.send(now);
            self.check_timeouts(now, tick);
            self.maintain_links(now);
            self.maybe_request_pid();
            self.refresh_metadata(now);
            self.finish_flushes();
            if self.finish_close(now) {
                return;
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Metadata { topic, reply } => self.want_metadata(topic, reply),
            Command::Flush { reply } => {
                self.flush_all_now = true;
                self.flushes.push((u64::MAX, reply));
            }
            Command::Close { timeout, reply } => self.begin_close(timeout, Some(reply)),
            Command::Purge { reply } => {
                let n = self.purge();
                let _ = reply.send(n);
            }
        }
    }

    fn begin_close(&mut self, timeout: Duration, reply: Option<oneshot::Sender<()>>) {
        let deadline = Instant::now() + timeout;
        match &mut self.closing {
            Some((d, replies)) => {
                *d = (*d).min(deadline);
                replies.extend(reply);
            }
            None => self.closing = Some((deadline, reply.into_iter().collect())),
        }
    }

    /// Everything delivered, or the close deadline passed (then what is left fails).
    fn finish_close(&mut self, now: Instant) -> bool {
        let Some((deadline, _)) = &self.closing else { return false };
        let idle = self.is_idle();
        if !idle && now < *deadline {
            return false;
        }
        if !idle {
            let err = ProduceError::new(
                ErrorKind::Closed,
                Persistence::NotPersisted,
                "producer closed before the record was delivered",
            );
            self.fail_everything(err);
        }
        for (_, tx) in self.flushes.drain(..) {
            let _ = tx.send(());
        }
        for (_, tx) in self.metadata_waiters.drain() {
            for w in tx {
                let _ = w.send(Err(ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "producer closed")));
            }
        }
        if let Some((_, replies)) = self.closing.take() {
            for r in replies {
                let _ = r.send(());
            }
        }
        for l in &mut self.links {
            l.close_all("producer closed");
        }
        true
    }

    fn is_idle(&self) -> bool {
        self.topics.iter().all(|t| {
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
        let oldest = self.topics.iter().flat_map(|t| t.parts.iter()).filter_map(|p| p.window.oldest_id()).min();
        let mut i = 0;
        while i < self.flushes.len() {
            let target = self.flushes[i].0;
            let done = target != u64::MAX && oldest.is_none_or(|o| o >= target);
            if done {
                let (_, tx) = self.flushes.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut d = now + Duration::from_millis(200);
        let mut consider = |t: Instant| {
            if t < d {
                d = t;
            }
        };
        for &(tid, p) in &self.active {
            if let Some(since) = self.topics[tid as usize].parts[p as usize].since {
                consider(since + self.cfg.linger);
            }
        }
        for t in &self.topics {
            for p in &t.parts {
                if let Some(i) = p.window.next_sendable(now + Duration::from_secs(3600), false) {
                    if let super::window::SlotState::Ready { not_before: Some(nb) } = p.window.slot(i).state {
                        consider(nb);
                    }
                }
            }
        }
        for l in &self.links {
            if let Some(t) = l.next_attempt() {
                consider(t);
            }
        }
        if let Some((c, _)) = &self.closing {
            consider(*c);
        }
        d
    }

    /// Fails every queued and pending record with `err` (close deadline, purge of
    /// everything, fatal error).
    pub(crate) fn fail_everything(&mut self, err: ProduceError) {
        for tid in 0..self.topics.len() {
            for p in 0..self.topics[tid].parts.len() {
                self.fail_queued(tid, p, &err);
                let slots = self.topics[tid].parts[p].window.drain_all();
                for s in slots {
                    self.fail_slot(s, err.clone());
                }
            }
        }
        self.metrics.in_flight_batches.store(0, Ordering::Relaxed);
    }

    /// Fails records still in a partition's queue (never sealed).
    fn fail_queued(&mut self, tid: usize, p: usize, err: &ProduceError) -> usize {
        let q = self.topics[tid].queues.partitions[p].clone();
        let mut n = 0;
        let mut fail = |r: QueuedRecord, acc: &Accumulator| {
            acc.release(r.size);
            r.delivery.complete(Err(err.clone().with_persistence(Persistence::NotPersisted)));
            n += 1;
        };
        if let Some(c) = self.topics[tid].parts[p].carry.take() {
            fail(c, &self.acc);
        }
        while let Some(r) = q.queue.pop() {
            q.queued_bytes.fetch_sub(r.size, Ordering::AcqRel);
            fail(r, &self.acc);
        }
        ProducerMetrics::add(&self.metrics.records_failed, n as u64);
        n
    }

    /// Fails every record of a batch; the persistence reported follows what is known.
    pub(crate) fn fail_slot(&mut self, s: Slot<BatchPayload>, err: ProduceError) {
        let persistence = match err.persistence() {
            Persistence::Persisted => Persistence::Persisted,
            _ if s.maybe_persisted => Persistence::PossiblyPersisted,
            p => p,
        };
        let err = err.with_persistence(persistence);
        self.acc.release(s.payload.memory);
        ProducerMetrics::add(&self.metrics.records_failed, s.payload.records.len() as u64);
        self.metrics.in_flight_batches.fetch_sub(1, Ordering::Relaxed);
        for (d, _, _) in s.payload.records {
            d.complete(Err(err.clone()));
        }
    }

    /// Purge: fail what has not been written yet (queued records and batches waiting
    /// to be sent for the first time).
    fn purge(&mut self) -> usize {
        let err = ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "record purged before it was sent");
        let mut n = 0;
        for tid in 0..self.topics.len() {
            for p in 0..self.topics[tid].parts.len() {
                n += self.fail_queued(tid, p, &err);
                let gone = self.topics[tid].parts[p].window.take_expired(|s| s.attempts == 0);
                for s in gone {
                    n += s.payload.records.len();
                    self.fail_slot(s, err.clone());
                }
            }
        }
        if matches!(self.pid, PidState::Ready { .. }) && n > 0 {
            // Purged batches had sequences: start a clean epoch so later ones are not refused.
            self.request_bump();
        }
        n
    }

    pub(crate) fn request_bump(&mut self) {
        if let PidState::Ready { id, epoch } = self.pid {
            self.pid = PidState::Bumping { id, epoch, requested: false };
        }
    }

    pub(crate) fn jitter(&mut self) -> f64 {
        use rand::Rng;
        self.rng.gen::<f64>()
    }
}
