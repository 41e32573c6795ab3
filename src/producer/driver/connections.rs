//! Links to brokers: connection slots with reconnect back-off, the per-broker circuit
//! breaker, control requests (metadata, producer id), and connection events.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Driver, PartState, PidState, TopicState};
use crate::producer::accumulator::{PartitionQueue, TopicQueues};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;
use crate::producer::window::Window;
use crate::protocol::frame::{InitProducerId, Metadata, MetadataOk};
use crate::protocol::{ErrorCode, Payload};
use crate::transport::pool::{spawn_call, spawn_connect, ConnId, PoolEvent};
use crate::transport::{BrokerConnection, TransportError};

/// One data stream of an open connection.
pub(crate) struct StreamState {
    pub tx: mpsc::UnboundedSender<Bytes>,
    /// Requests awaiting a response, in the order sent: (correlation id, topic, partition).
    pub expected: VecDeque<(u32, u32, u32)>,
}

pub(crate) enum ConnSlot {
    Down { retry_at: Instant },
    Connecting,
    Up { conn: Arc<BrokerConnection>, streams: Vec<StreamState> },
}

/// Circuit breaker state of a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breaker {
    Closed,
    /// Failing fast until then.
    Open {
        until: Instant,
    },
    /// One trial connection allowed.
    HalfOpen,
}

pub(crate) struct Link {
    pub addr: Option<SocketAddr>,
    pub name: String,
    pub broker_id: Option<u32>,
    pub slots: Vec<(u64, ConnSlot)>,
    pub failures: u32,
    pub breaker: Breaker,
    pub last_error: Option<String>,
    pub fatal: Option<ProduceError>,
}

impl Link {
    pub(crate) fn next_attempt(&self) -> Option<Instant> {
        if let Breaker::Open { until } = self.breaker {
            return Some(until);
        }
        self.slots
            .iter()
            .filter_map(|(_, s)| if let ConnSlot::Down { retry_at } = s { Some(*retry_at) } else { None })
            .min()
    }

    pub(crate) fn close_all(&mut self, reason: &str) {
        for (_, s) in &mut self.slots {
            if let ConnSlot::Up { conn, .. } = s {
                conn.close(reason);
            }
            *s = ConnSlot::Down { retry_at: Instant::now() };
        }
    }

    pub(crate) fn is_up(&self, slot: usize) -> bool {
        matches!(self.slots.get(slot), Some((_, ConnSlot::Up { .. })))
    }
}

/// What a control request was for.
pub(crate) enum ControlKind {
    /// Topics asked for, and the link the request went to.
    Metadata(Vec<Arc<str>>, usize),
    InitPid,
}

impl Driver {
    pub(crate) fn start_links(&mut self, now: Instant) {
        for b in self.cfg.bootstrap.clone() {
            let addr = b.to_socket_addrs().ok().and_then(|mut a| a.next());
            let mut link = Link {
                addr,
                name: b.clone(),
                broker_id: None,
                slots: (0..self.cfg.connections_per_broker).map(|_| (0, ConnSlot::Down { retry_at: now })).collect(),
                failures: 0,
                breaker: Breaker::Closed,
                last_error: None,
                fatal: None,
            };
            if addr.is_none() {
                link.last_error = Some(format!("cannot resolve broker address '{b}'"));
            }
            self.links.push(link);
        }
        self.maintain_links(now);
    }

    /// Starts connection attempts that are due; moves breakers from open to half-open.
    pub(crate) fn maintain_links(&mut self, now: Instant) {
        if self.closing.is_some() && self.is_idle() {
            return;
        }
        for li in 0..self.links.len() {
            let link = &mut self.links[li];
            let Some(addr) = link.addr else { continue };
            if link.fatal.is_some() {
                continue;
            }
            if let Breaker::Open { until } = link.breaker {
                if now < until {
                    continue;
                }
                link.breaker = Breaker::HalfOpen;
            }
            let half_open = link.breaker == Breaker::HalfOpen;
            let connecting = link.slots.iter().any(|(_, s)| matches!(s, ConnSlot::Connecting));
            for si in 0..link.slots.len() {
                let (gen, slot) = &mut link.slots[si];
                let ConnSlot::Down { retry_at } = slot else { continue };
                if *retry_at > now || (half_open && connecting) {
                    continue;
                }
                *gen += 1;
                *slot = ConnSlot::Connecting;
                spawn_connect(
                    self.endpoint.clone(),
                    addr,
                    self.cfg.tls.as_ref().map_or_else(|| "localhost".into(), |t| t.server_name.clone()),
                    self.cfg.client_id.clone(),
                    ConnId { link: li, slot: si, gen: *gen },
                    self.cfg.streams_per_connection,
                    self.ev_tx.clone(),
                );
                if half_open {
                    break;
                }
            }
        }
    }

    pub(crate) fn on_event(&mut self, ev: PoolEvent) {
        match ev {
            PoolEvent::Connected { id, conn, streams } => {
                if !self.current(id) {
                    conn.close("superseded");
                    return;
                }
                ProducerMetrics::add(&self.metrics.connects, 1);
                let link = &mut self.links[id.link];
                // The broker says who it is in HelloOk: metadata leaders map to links by it.
                link.broker_id = Some(conn.hello().broker_id);
                link.failures = 0;
                link.breaker = Breaker::Closed;
                link.last_error = None;
                tracing::debug!(broker = %link.name, slot = id.slot, "connected");
                link.slots[id.slot].1 = ConnSlot::Up {
                    conn,
                    streams: streams.into_iter().map(|tx| StreamState { tx, expected: VecDeque::new() }).collect(),
                };
                self.request_pending_metadata();
            }
            PoolEvent::ConnectFailed { id, error } => {
                if self.current(id) {
                    self.connection_failed(id, error);
                }
            }
            PoolEvent::StreamDown { id, stream, error } => {
                if self.current(id) {
                    let error = error.unwrap_or(TransportError::StreamClosed {
                        addr: self.links[id.link].addr.expect("connected link has an address"),
                        detail: format!("broker finished data stream {stream}"),
                    });
                    self.connection_lost(id, error);
                }
            }
            PoolEvent::Frame { id, stream, frame } => {
                if self.current(id) {
                    self.on_response(id, stream, frame);
                }
            }
            PoolEvent::Control { tag, result } => self.on_control(tag, result),
        }
    }

    fn current(&self, id: ConnId) -> bool {
        self.links.get(id.link).and_then(|l| l.slots.get(id.slot)).is_some_and(|(g, _)| *g == id.gen)
    }

    fn connection_failed(&mut self, id: ConnId, error: TransportError) {
        let now = Instant::now();
        let tls = matches!(error, TransportError::TlsRejected { .. });
        let backoff = {
            let link = &mut self.links[id.link];
            link.failures += 1;
            link.last_error = Some(error.to_string());
            self.cfg.reconnect_backoff.delay(link.failures, 0.5)
        };
        let backoff = backoff.mul_f64(0.8 + 0.4 * self.jitter());
        tracing::warn!(broker = %self.links[id.link].name, error = %error, ?backoff, "connect failed");
        let link = &mut self.links[id.link];
        link.slots[id.slot].1 = ConnSlot::Down { retry_at: now + backoff };
        if tls {
            // A refused certificate does not heal by retrying: fail what waits for this
            // broker right away and keep the breaker open.
            link.fatal = Some(ProduceError::transport(error, Persistence::NotPersisted));
            self.fail_link_pending(id.link);
            return;
        }
        if link.failures >= self.cfg.circuit_breaker_threshold || link.breaker == Breaker::HalfOpen {
            link.breaker = Breaker::Open { until: now + self.cfg.circuit_breaker_recovery };
            tracing::warn!(broker = %link.name, failures = link.failures, "circuit breaker open");
            self.fail_link_pending(id.link);
        }
    }

    /// The breaker is open (or the broker refused us): fail fast every batch waiting for
    /// that broker, with what we know about its persistence.
    pub(crate) fn fail_link_pending(&mut self, link: usize) {
        let (kind, msg) = match &self.links[link].fatal {
            Some(e) => (e.kind(), e.message().to_string()),
            None => (
                ErrorKind::CircuitOpen,
                format!(
                    "broker {} unavailable (circuit breaker open after {} failures): {}",
                    self.links[link].name,
                    self.links[link].failures,
                    self.links[link].last_error.as_deref().unwrap_or("connection failed")
                ),
            ),
        };
        let err = ProduceError::new(kind, Persistence::NotPersisted, msg);
        let mut gap = false;
        for tid in 0..self.topics.len() {
            for p in 0..self.topics[tid].parts.len() {
                if self.topics[tid].parts[p].link != link {
                    continue;
                }
                let gone = self.topics[tid].parts[p].window.take_expired(|_| true);
                gap |= !gone.is_empty();
                for s in gone {
                    self.fail_slot(s, err.clone());
                }
            }
        }
        if gap {
            self.request_bump();
        }
        for (_, ws) in self.metadata_waiters.drain() {
            for w in ws {
                let _ = w.send(Err(err.clone()));
            }
        }
    }

    /// A live connection broke: in-flight batches on it lose their answer.
    pub(crate) fn connection_lost(&mut self, id: ConnId, error: TransportError) {
        let now = Instant::now();
        let link = &mut self.links[id.link];
        // Every stream of a broken connection reports it; handle the loss once.
        let ConnSlot::Up { conn, .. } = &link.slots[id.slot].1 else { return };
        conn.close("connection lost");
        tracing::warn!(broker = %link.name, slot = id.slot, error = %error, "connection lost");
        link.failures += 1;
        link.last_error = Some(error.to_string());
        let backoff = self.cfg.reconnect_backoff.delay(1, 0.5);
        link.slots[id.slot].1 = ConnSlot::Down { retry_at: now + backoff };
        let retry = self.cfg.retry_backoff.delay(1, 0.5);
        let idempotent = self.pid != PidState::Off;
        let err = ProduceError::transport(error, Persistence::PossiblyPersisted);
        for tid in 0..self.topics.len() {
            for p in 0..self.topics[tid].parts.len() {
                let part = &mut self.topics[tid].parts[p];
                if part.link != id.link || part.stream % self.cfg.connections_per_broker != id.slot {
                    continue;
                }
                if idempotent {
                    // Resent in order on the next connection; the broker's dedup answers
                    // any that did land with their original offsets.
                    part.window.connection_lost(id.gen, retry, now);
                } else {
                    // Without idempotence a resend could duplicate: report instead.
                    let lost = part.window.take_in_flight(id.gen);
                    for s in lost {
                        self.fail_slot(s, err.clone());
                    }
                }
            }
        }
    }

    /// An open connection for control requests (the first link that has one) and its link.
    fn control_conn(&self) -> Option<(usize, Arc<BrokerConnection>)> {
        self.links.iter().enumerate().find_map(|(i, l)| {
            l.slots.iter().find_map(|(_, s)| match s {
                ConnSlot::Up { conn, .. } => Some((i, conn.clone())),
                _ => None,
            })
        })
    }

    fn call(&mut self, payload: Payload, kind: impl FnOnce(usize) -> ControlKind) -> bool {
        let Some((link, conn)) = self.control_conn() else { return false };
        let kind = kind(link);
        let tag = self.next_tag;
        self.next_tag += 1;
        self.control.insert(tag, kind);
        spawn_call(conn, payload, tag, self.ev_tx.clone());
        true
    }

    pub(crate) fn want_metadata(&mut self, topic: Arc<str>, reply: super::MetadataReply) {
        if let Some(&tid) = self.topic_ids.get(&topic) {
            let _ = reply.send(Ok(self.topics[tid as usize].queues.clone()));
            return;
        }
        if let Some(e) = self.links.iter().find_map(|l| l.fatal.clone()) {
            let _ = reply.send(Err(e));
            return;
        }
        let first = !self.metadata_waiters.contains_key(&topic);
        self.metadata_waiters.entry(topic.clone()).or_default().push(reply);
        if first {
            self.call(Payload::Metadata(Metadata { topics: vec![topic.to_string()] }), |l| {
                ControlKind::Metadata(vec![topic], l)
            });
        }
    }

    fn request_pending_metadata(&mut self) {
        let pending: Vec<Arc<str>> = self
            .metadata_waiters
            .keys()
            .filter(|t| !self.control.values().any(|k| matches!(k, ControlKind::Metadata(ts, _) if ts.contains(t))))
            .cloned()
            .collect();
        if !pending.is_empty() {
            let topics = pending.iter().map(|t| t.to_string()).collect();
            self.call(Payload::Metadata(Metadata { topics }), |l| ControlKind::Metadata(pending, l));
        }
    }

    /// Periodic refresh: picks up partitions added to known topics.
    pub(crate) fn refresh_metadata(&mut self, now: Instant) {
        let due = *self.metadata_due.get_or_insert(now + self.cfg.metadata_max_age);
        if now < due || self.topics.is_empty() {
            return;
        }
        self.metadata_due = Some(now + self.cfg.metadata_max_age);
        let names: Vec<Arc<str>> = self.topics.iter().map(|t| t.queues.name.clone()).collect();
        let topics = names.iter().map(|t| t.to_string()).collect();
        self.call(Payload::Metadata(Metadata { topics }), |l| ControlKind::Metadata(names, l));
    }

    pub(crate) fn maybe_request_pid(&mut self) {
        if Instant::now() < self.pid_retry_at {
            return;
        }
        let payload = match self.pid {
            PidState::Missing { requested: false } => InitProducerId { producer_id: -1, producer_epoch: -1 },
            PidState::Bumping { id, epoch, requested: false } => {
                let unresolved = self.topics.iter().flat_map(|t| t.parts.iter()).any(|p| p.window.has_unresolved());
                if unresolved {
                    return;
                }
                InitProducerId { producer_id: id, producer_epoch: epoch }
            }
            _ => return,
        };
        if self.call(Payload::InitProducerId(payload), |_| ControlKind::InitPid) {
            match &mut self.pid {
                PidState::Missing { requested } | PidState::Bumping { requested, .. } => *requested = true,
                _ => {}
            }
        }
    }

    fn on_control(&mut self, tag: u64, result: Result<Payload, TransportError>) {
        let Some(kind) = self.control.remove(&tag) else { return };
        match kind {
            ControlKind::InitPid => self.on_init_pid(result),
            ControlKind::Metadata(topics, link) => match result {
                Ok(Payload::MetadataOk(m)) => self.on_metadata(m, link),
                Ok(other) => tracing::warn!(kind = ?other.kind(), "unexpected metadata answer"),
                Err(e) => {
                    tracing::warn!(error = %e, "metadata request failed; will retry on the next connection");
                    if !e.is_retriable() {
                        let err = ProduceError::transport(e, Persistence::NotPersisted);
                        for t in topics {
                            for w in self.metadata_waiters.remove(&t).unwrap_or_default() {
                                let _ = w.send(Err(err.clone()));
                            }
                        }
                    }
                }
            },
        }
    }

    fn on_init_pid(&mut self, result: Result<Payload, TransportError>) {
        match result {
            Ok(Payload::InitProducerIdOk(ok)) => {
                let bumped = matches!(self.pid, PidState::Bumping { .. });
                self.pid = PidState::Ready { id: ok.producer_id, epoch: ok.producer_epoch };
                tracing::info!(producer_id = ok.producer_id, epoch = ok.producer_epoch, bumped, "producer id ready");
                if bumped {
                    ProducerMetrics::add(&self.metrics.epoch_bumps, 1);
                    for t in &mut self.topics {
                        for p in &mut t.parts {
                            // New epoch: sequences restart at 0; batches are restamped at send.
                            p.window.resequence();
                        }
                    }
                }
            }
            other => {
                let refused = matches!(&other, Err(TransportError::Broker { code, .. }) if !code.is_retriable());
                // A new id refused for good (e.g. AUTHORIZATION_FAILED: no write permission
                // anywhere): the records waiting for it fail now instead of at their delivery
                // timeout; the id is asked for again after the back-off.
                let denied = match (&other, &self.pid) {
                    (Err(TransportError::Broker { code, message, .. }), PidState::Missing { .. }) if refused => {
                        Some((*code, message.clone()))
                    }
                    _ => None,
                };
                let msg = match other {
                    Ok(p) => format!("unexpected answer {:?}", p.kind()),
                    Err(e) => e.to_string(),
                };
                if let Some((code, message)) = denied {
                    let err = ProduceError::new(
                        ErrorKind::Broker(code),
                        Persistence::NotPersisted,
                        format!("no producer id: broker answered {code}: {message}"),
                    );
                    self.fail_everything(err);
                }
                tracing::warn!(error = %msg, "InitProducerId failed; retrying");
                self.pid_retry_at = Instant::now() + self.cfg.retry_backoff.delay(1, 0.5);
                match &mut self.pid {
                    PidState::Missing { requested } => *requested = false,
                    PidState::Bumping { id, epoch, requested } => {
                        *requested = false;
                        if refused {
                            // The broker does not know this id (its state was lost): take a
                            // fresh one; the waiting batches are resequenced all the same.
                            (*id, *epoch) = (-1, -1);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn on_metadata(&mut self, m: MetadataOk, answered_by: usize) {
        for t in m.topics {
            let name: Arc<str> = Arc::from(t.name.as_str());
            let waiters = self.metadata_waiters.remove(&name).unwrap_or_default();
            if t.error != ErrorCode::None {
                let msg = match t.error {
                    ErrorCode::UnknownTopicOrPartition => format!("topic '{name}' does not exist"),
                    ErrorCode::AuthorizationFailed => format!("not authorized for topic '{name}'"),
                    c => format!("topic '{name}': {c}"),
                };
                let err = ProduceError::new(ErrorKind::Broker(t.error), Persistence::NotPersisted, msg);
                for w in waiters {
                    let _ = w.send(Err(err.clone()));
                }
                continue;
            }
            let leader = t.partitions.first().map(|p| p.leader);
            // The link connected to the leader; failing that, the link that answered.
            let link = leader
                .and_then(|id| {
                    self.links.iter().position(|l| {
                        l.broker_id == Some(id) && l.slots.iter().any(|(_, s)| matches!(s, ConnSlot::Up { .. }))
                    })
                })
                .or_else(|| leader.and_then(|id| self.links.iter().position(|l| l.broker_id == Some(id))))
                .unwrap_or(answered_by);
            let count = t.partitions.len() as u32;
            let tid = match self.topic_ids.get(&name) {
                Some(&tid) => {
                    let have = self.topics[tid as usize].parts.len() as u32;
                    if count > have {
                        self.extend_topic(tid, count, link);
                    }
                    tid
                }
                None => self.add_topic(name.clone(), count, link),
            };
            let queues = self.topics[tid as usize].queues.clone();
            for w in waiters {
                let _ = w.send(Ok(queues.clone()));
            }
        }
    }

    fn new_part(&self, tid: u32, p: u32, link: usize) -> PartState {
        let streams = self.cfg.connections_per_broker * self.cfg.streams_per_connection;
        // Spread partitions over streams; a partition keeps its stream for life.
        let g = (tid as usize).wrapping_mul(7919).wrapping_add(p as usize) % streams;
        PartState {
            window: Window::new(self.pid != PidState::Off, self.cfg.max_in_flight),
            carry: None,
            since: None,
            active: false,
            stream: g,
            link,
        }
    }

    fn add_topic(&mut self, name: Arc<str>, count: u32, link: usize) -> u32 {
        let tid = self.topics.len() as u32;
        let queues = Arc::new(TopicQueues {
            id: tid,
            name: name.clone(),
            partitions: (0..count).map(|_| Arc::new(PartitionQueue::default())).collect(),
        });
        let parts = (0..count).map(|p| self.new_part(tid, p, link)).collect();
        self.topics.push(TopicState { queues: queues.clone(), parts });
        self.topic_ids.insert(name, tid);
        self.acc.publish(queues);
        tid
    }

    fn extend_topic(&mut self, tid: u32, count: u32, link: usize) {
        let t = &self.topics[tid as usize];
        let mut partitions = t.queues.partitions.clone();
        let have = partitions.len() as u32;
        partitions.extend((have..count).map(|_| Arc::new(PartitionQueue::default())));
        let queues = Arc::new(TopicQueues { id: tid, name: t.queues.name.clone(), partitions });
        let new_parts: Vec<PartState> = (have..count).map(|p| self.new_part(tid, p, link)).collect();
        let t = &mut self.topics[tid as usize];
        t.parts.extend(new_parts);
        t.queues = queues.clone();
        self.acc.publish(queues);
        tracing::info!(topic = %t.queues.name, from = have, to = count, "partitions added");
    }

    /// The stream of a partition, if its connection is up.
    pub(crate) fn stream_of(&mut self, link: usize, stream: usize) -> Option<(u64, &mut StreamState)> {
        stream_in(&mut self.links, self.cfg.connections_per_broker, link, stream)
    }

    /// Closes a connection whose request timed out, as if it had broken.
    pub(crate) fn expire_connection(&mut self, link: usize, slot: usize, gen: u64) {
        if self.links[link].slots[slot].0 != gen || !self.links[link].is_up(slot) {
            return;
        }
        let addr = self.links[link].addr.expect("connected link has an address");
        let timeout = self.cfg.request_timeout;
        self.connection_lost(ConnId { link, slot, gen }, TransportError::Timeout { addr, timeout });
    }
}

/// The stream with global index `stream` of `link`: connection slot `stream % conns`,
/// stream `stream / conns` within it, if that connection is up.
pub(crate) fn stream_in(
    links: &mut [Link],
    conns: usize,
    link: usize,
    stream: usize,
) -> Option<(u64, &mut StreamState)> {
    let (slot, idx) = (stream % conns, stream / conns);
    let (gen, s) = links.get_mut(link)?.slots.get_mut(slot)?;
    match s {
        ConnSlot::Up { streams, .. } => Some((*gen, streams.get_mut(idx)?)),
        _ => None,
    }
}

/// The error for records refused because the producer is closed.
pub(crate) fn closed_error() -> ProduceError {
    ProduceError::new(ErrorKind::Closed, Persistence::NotPersisted, "producer closed")
}
