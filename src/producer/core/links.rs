//! Links to brokers: for each broker, `connections_per_broker` connection slots with
//! reconnect back-off behind the broker's circuit breaker, and for each open connection
//! its data streams with the responses they still owe, in order.
//!
//! A connection slot goes `Down → Connecting → Up → Down`; every connection attempt gets a
//! new generation, so an event about an older attempt is recognised and ignored.

use std::collections::VecDeque;
use std::time::Duration;

use super::breaker::{Breaker, BreakerState};
use super::{ConnId, HelloInfo, StreamId, Tick};
use crate::producer::clock::later;
use crate::producer::config::ProducerConfig;
use crate::producer::error::ProduceError;

/// A request written (or being written) to a data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Its correlation id.
    pub corr: u32,
    /// Topic index in the topic table.
    pub topic: u32,
    /// Partition.
    pub partition: u32,
}

/// One data stream of an open connection.
#[derive(Debug)]
pub(crate) struct DataStream {
    /// Generation of the QUIC stream behind it (a reset stream is replaced by the next).
    pub gen: u32,
    /// False between a reset and the replacement's opening.
    pub up: bool,
    /// Requests whose responses are due, in the order the broker will answer them.
    pub answers: VecDeque<Expected>,
    /// Requests handed to the shell and not yet reported written, in order.
    pub unwritten: VecDeque<Expected>,
}

impl DataStream {
    fn new(gen: u32) -> Self {
        DataStream { gen, up: true, answers: VecDeque::new(), unwritten: VecDeque::new() }
    }
}

/// A connection slot's state.
#[derive(Debug)]
pub(crate) enum SlotState {
    /// Not connected; the next attempt is due at `retry_at`.
    Down { retry_at: Tick },
    /// An attempt is running; it is given up at `deadline` (the shell bounds the attempt
    /// by the connect timeout; this is the core's own guard, a little later).
    Connecting { deadline: Tick },
    /// Open, with its data streams.
    Up {
        /// The data streams.
        streams: Vec<DataStream>,
        /// When it opened (a connection lost soon after counts as a failed attempt).
        since: Tick,
    },
}

/// A connection slot.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    /// Generation of the current (or last) attempt.
    pub gen: u64,
    /// Where it stands.
    pub state: SlotState,
    /// Consecutive failed attempts of this slot (connections refused, and connections lost
    /// soon after opening): its reconnect back-off grows with them. Reset when one of its
    /// connections is lost after it proved stable.
    pub failures: u32,
}

/// One broker.
#[derive(Debug)]
pub(crate) struct Link {
    /// `host:port`, resolved at every connection attempt.
    pub name: String,
    /// The broker's id, once it said it in `HelloOk`.
    pub broker_id: Option<u32>,
    /// Connection slots.
    pub slots: Vec<ConnSlot>,
    /// The circuit breaker.
    pub breaker: Breaker,
    /// The last failure, for error messages.
    pub last_error: Option<String>,
    /// Set while the broker refuses this client's certificate: batches for it fail with
    /// this error until a trial connection succeeds.
    pub refused: Option<ProduceError>,
    /// The largest frame the broker accepts (from `HelloOk`).
    pub max_frame: Option<usize>,
    /// The largest batch the broker accepts (from `HelloOk`).
    pub max_batch: Option<usize>,
    /// Batches per partition the broker remembers for dedup (from `HelloOk`).
    pub max_in_flight: Option<usize>,
    /// The broker supports per-partition epochs (from `HelloOk`).
    pub per_partition_epochs: bool,
    /// The broker id a metadata answer gave for this link's address (until `HelloOk`).
    pub advertised_id: Option<u32>,
    /// The next attempt re-reads the TLS files (after a refused certificate).
    reload_tls: bool,
}

impl Link {
    /// The largest batch for `topic` this broker accepts, once known: its batch limit, and
    /// its frame limit less the produce request around the batch.
    pub(crate) fn batch_limit(&self, topic: &str) -> Option<usize> {
        let frame = self.max_frame?.saturating_sub(super::batches::frame_overhead(topic));
        Some(self.max_batch.map_or(frame, |b| b.min(frame)))
    }

    fn new(name: String, conns: usize, cfg: &ProducerConfig, now: Tick) -> Self {
        Link {
            name,
            broker_id: None,
            slots: (0..conns)
                .map(|_| ConnSlot { gen: 0, state: SlotState::Down { retry_at: now }, failures: 0 })
                .collect(),
            breaker: Breaker::new(cfg.circuit_breaker_threshold, cfg.circuit_breaker_recovery),
            last_error: None,
            refused: None,
            max_frame: None,
            max_batch: None,
            max_in_flight: None,
            per_partition_epochs: false,
            advertised_id: None,
            reload_tls: false,
        }
    }

    /// Whether any connection of this link is open.
    pub(crate) fn is_up(&self) -> bool {
        self.slots.iter().any(|s| matches!(s.state, SlotState::Up { .. }))
    }

    /// Batches for this broker fail fast: no connection to it is up, and its breaker is
    /// open or it refused our certificate.
    pub(crate) fn failing_fast(&self, now: Tick) -> bool {
        !self.is_up() && (self.refused.is_some() || self.breaker.is_open(now))
    }
}

/// A connection attempt to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connect {
    /// Which slot and generation.
    pub conn: ConnId,
    /// `host:port` to resolve and connect to.
    pub addr: String,
    /// Re-read the TLS files first.
    pub reload_tls: bool,
}

/// Every broker link.
#[derive(Debug)]
pub(crate) struct Links {
    /// The links, bootstrap brokers first.
    pub list: Vec<Link>,
    conns: usize,
    streams: usize,
    /// How long a connection attempt may take before the core gives it up.
    connect_allowance: Duration,
}

impl Links {
    pub(crate) fn new(cfg: &ProducerConfig, now: Tick) -> Self {
        let conns = cfg.connections_per_broker;
        Links {
            list: cfg.bootstrap.iter().map(|b| Link::new(b.clone(), conns, cfg, now)).collect(),
            conns,
            streams: cfg.streams_per_connection,
            connect_allowance: cfg.connect_timeout.saturating_add(super::timeouts::margin(cfg.connect_timeout)),
        }
    }

    /// Data streams per connection.
    pub(crate) fn streams_per_connection(&self) -> usize {
        self.streams
    }

    /// Connection slots per broker.
    pub(crate) fn connections_per_broker(&self) -> usize {
        self.conns
    }

    /// Adds a link for a broker named in metadata (unless one has that name); returns its index.
    pub(crate) fn ensure(&mut self, name: &str, cfg: &ProducerConfig, now: Tick) -> usize {
        if let Some(i) = self.list.iter().position(|l| l.name == name) {
            return i;
        }
        self.list.push(Link::new(name.to_owned(), self.conns, cfg, now));
        self.list.len() - 1
    }

    /// Whether `conn` is the current attempt of its slot.
    pub(crate) fn is_current(&self, conn: ConnId) -> bool {
        self.list.get(conn.link).and_then(|l| l.slots.get(conn.slot)).is_some_and(|s| s.gen == conn.gen)
    }

    /// The data stream with global index `g` of `link` (connection slot `g % conns`, stream
    /// `g / conns` within it), if that connection is up and the stream open. While that
    /// connection is down, the same stream of the first live connection to the broker
    /// stands in (the window keeps a partition's in-flight batches on one stream).
    pub(crate) fn stream(&mut self, link: usize, g: usize) -> Option<(StreamId, &mut DataStream)> {
        let (own, index) = (g % self.conns, g / self.conns);
        let l = self.list.get_mut(link)?;
        let up = |s: &ConnSlot| matches!(s.state, SlotState::Up { .. });
        let slot = if l.slots.get(own).is_some_and(up) { own } else { l.slots.iter().position(up)? };
        let s = l.slots.get_mut(slot)?;
        let gen = s.gen;
        match &mut s.state {
            SlotState::Up { streams, .. } => {
                let st = streams.get_mut(index)?;
                let id = StreamId { conn: ConnId { link, slot, gen }, index, gen: st.gen };
                st.up.then_some((id, st))
            }
            _ => None,
        }
    }

    /// The data stream `id`, if it is still the current one.
    pub(crate) fn stream_by_id(&mut self, id: StreamId) -> Option<&mut DataStream> {
        if !self.is_current(id.conn) {
            return None;
        }
        match &mut self.list[id.conn.link].slots[id.conn.slot].state {
            SlotState::Up { streams, .. } => streams.get_mut(id.index).filter(|s| s.gen == id.gen),
            _ => None,
        }
    }

    /// Starts the connection attempts that are due (closed breakers: every slot whose
    /// back-off is over; half-open: one trial).
    pub(crate) fn connects_due(&mut self, now: Tick) -> Vec<Connect> {
        let mut out = Vec::new();
        for (li, link) in self.list.iter_mut().enumerate() {
            for (si, slot) in link.slots.iter_mut().enumerate() {
                let SlotState::Down { retry_at } = slot.state else { continue };
                if retry_at > now || !link.breaker.try_attempt(now) {
                    continue;
                }
                slot.gen += 1;
                slot.state = SlotState::Connecting { deadline: later(now, self.connect_allowance) };
                out.push(Connect {
                    conn: ConnId { link: li, slot: si, gen: slot.gen },
                    addr: link.name.clone(),
                    reload_tls: link.reload_tls,
                });
            }
        }
        out
    }

    /// A connection is ready.
    pub(crate) fn on_connected(&mut self, now: Tick, conn: ConnId, hello: &HelloInfo) {
        let streams = self.streams;
        let link = &mut self.list[conn.link];
        link.broker_id = Some(hello.broker_id);
        link.max_frame = Some(hello.max_frame_size);
        link.max_batch = Some(hello.max_batch_bytes);
        // 0 would stop every partition: a broker that says it is taken as "no limit".
        link.max_in_flight = (hello.max_in_flight > 0).then_some(hello.max_in_flight);
        link.per_partition_epochs = hello.per_partition_epochs;
        // Closed, but its count of failures stays until the connection proves stable (see
        // `on_lost`): a broker that accepts and then drops every connection still opens it.
        link.breaker.on_connected();
        link.last_error = None;
        link.refused = None;
        link.reload_tls = false;
        link.slots[conn.slot].state =
            SlotState::Up { streams: (0..streams).map(|_| DataStream::new(0)).collect(), since: now };
    }

    /// A connection attempt failed; `refused` is set when the broker refused the certificate.
    /// Returns true if the breaker opened.
    ///
    /// The breaker counts a failure only while no other connection to the broker is up: a
    /// broker with a live connection is reachable (an extra connection refused at its
    /// `max_connections`, say, only backs off that slot).
    pub(crate) fn on_connect_failed(
        &mut self,
        now: Tick,
        conn: ConnId,
        error: String,
        refused: Option<ProduceError>,
        backoff: Duration,
    ) -> bool {
        let link = &mut self.list[conn.link];
        link.last_error = Some(error);
        let slot = &mut link.slots[conn.slot];
        slot.state = SlotState::Down { retry_at: later(now, backoff) };
        slot.failures = slot.failures.saturating_add(1);
        if link.is_up() {
            // Certificates are re-read on this slot's next attempt (rotation in progress).
            link.reload_tls |= refused.is_some();
            return false;
        }
        if let Some(e) = refused {
            // Retrying soon cannot heal a refused certificate: fail fast, and after the
            // recovery time try once more with the files read again (rotated certificates).
            link.refused = Some(e);
            link.reload_tls = true;
            let _ = link.breaker.on_failure(now);
            link.breaker.open(now);
            return true;
        }
        link.breaker.on_failure(now)
    }

    /// Whether the open connection `conn` was lost soon enough after opening to count as
    /// a failed attempt: it had been up for less than `stable`.
    pub(crate) fn quick_loss(&self, now: Tick, conn: ConnId, stable: Duration) -> bool {
        match self.list[conn.link].slots[conn.slot].state {
            SlotState::Up { since, .. } => now.saturating_duration_since(since) < stable,
            _ => false,
        }
    }

    /// An open connection broke; the slot reconnects after `backoff`. A `quick` loss counts
    /// as a failed attempt (on the breaker too while no other connection to the broker is
    /// up); a connection that had been stable resets the counts. Returns true if the
    /// breaker opened.
    pub(crate) fn on_lost(&mut self, now: Tick, conn: ConnId, error: String, backoff: Duration, quick: bool) -> bool {
        let link = &mut self.list[conn.link];
        link.last_error = Some(error);
        let slot = &mut link.slots[conn.slot];
        slot.state = SlotState::Down { retry_at: later(now, backoff) };
        if !quick {
            slot.failures = 0;
            link.breaker.on_stable();
            return false;
        }
        slot.failures = slot.failures.saturating_add(1);
        !link.is_up() && link.breaker.on_failure(now)
    }

    /// An open connection for control requests: the first up connection, preferring `link`.
    pub(crate) fn control_conn(&self, prefer: Option<usize>) -> Option<ConnId> {
        let up = |li: usize| {
            let l = &self.list[li];
            l.slots.iter().enumerate().find_map(|(si, s)| {
                matches!(s.state, SlotState::Up { .. }).then_some(ConnId { link: li, slot: si, gen: s.gen })
            })
        };
        prefer.and_then(up).or_else(|| (0..self.list.len()).find_map(up))
    }

    /// The link of broker `id`, preferring one that is up.
    pub(crate) fn of_broker(&self, id: u32) -> Option<usize> {
        let mine = |l: &Link| l.broker_id.or(l.advertised_id) == Some(id);
        self.list.iter().position(|l| mine(l) && l.is_up()).or_else(|| self.list.iter().position(mine))
    }

    /// The open connections (to close them).
    pub(crate) fn open_conns(&self) -> Vec<ConnId> {
        let mut out = Vec::new();
        for (li, l) in self.list.iter().enumerate() {
            for (si, s) in l.slots.iter().enumerate() {
                if matches!(s.state, SlotState::Up { .. } | SlotState::Connecting { .. }) {
                    out.push(ConnId { link: li, slot: si, gen: s.gen });
                }
            }
        }
        out
    }

    /// Marks every slot down (the producer is closing).
    pub(crate) fn shut_all(&mut self, now: Tick) {
        for l in &mut self.list {
            for s in &mut l.slots {
                s.state = SlotState::Down { retry_at: later(now, crate::producer::clock::NEVER) };
            }
        }
    }

    /// The connection attempts past their deadline (still current).
    pub(crate) fn connects_overdue(&self, now: Tick) -> Vec<ConnId> {
        let mut out = Vec::new();
        for (li, l) in self.list.iter().enumerate() {
            for (si, s) in l.slots.iter().enumerate() {
                if matches!(s.state, SlotState::Connecting { deadline } if deadline <= now) {
                    out.push(ConnId { link: li, slot: si, gen: s.gen });
                }
            }
        }
        out
    }

    /// How long a connection attempt may take.
    pub(crate) fn connect_allowance(&self) -> Duration {
        self.connect_allowance
    }

    /// Makes `conn` stale: whatever the shell reports about it later is ignored (a late
    /// `Connected` is closed).
    pub(crate) fn retire(&mut self, conn: ConnId) {
        if self.is_current(conn) {
            self.list[conn.link].slots[conn.slot].gen += 1;
        }
    }

    /// The next time a link changes by itself: a reconnect due, a breaker half-opening, a
    /// connection attempt to give up.
    pub(crate) fn next_timeout(&self, now: Tick) -> Option<Tick> {
        let mut t: Option<Tick> = None;
        let mut consider = |x: Tick| t = Some(t.map_or(x, |t| t.min(x)));
        for l in &self.list {
            for s in &l.slots {
                if let SlotState::Connecting { deadline } = s.state {
                    consider(deadline);
                }
            }
            match l.breaker.state(now) {
                BreakerState::Open { until } => consider(until),
                // The trial's outcome is an event, not a time.
                BreakerState::HalfOpen { trial: true } => {}
                _ => {
                    for s in &l.slots {
                        if let SlotState::Down { retry_at } = s.state {
                            consider(retry_at);
                        }
                    }
                }
            }
        }
        t
    }
}

impl super::Core {
    pub(crate) fn on_connected(&mut self, now: Tick, conn: ConnId, hello: HelloInfo) {
        if !self.links.is_current(conn) {
            self.actions.push_back(super::Action::Close { conn, reason: "superseded" });
            return;
        }
        crate::producer::metrics::ProducerMetrics::add(&self.metrics.connects, 1);
        tracing::debug!(broker = %self.links.list[conn.link].name, slot = conn.slot, "connected");
        self.links.on_connected(now, conn, &hello);
        self.request_pending_metadata(now);
    }

    pub(crate) fn on_connect_failed(&mut self, now: Tick, conn: ConnId, error: crate::transport::TransportError) {
        use crate::producer::error::{Persistence, ProduceError};
        if !self.links.is_current(conn) {
            return;
        }
        // Refusals that retrying soon cannot heal: a certificate or SASL credentials. (A
        // token provider that failed may recover at once: that is retried as usual.)
        use crate::auth::client::SaslError;
        use crate::transport::TransportError as T;
        let tls = match &error {
            T::Sasl { source: SaslError::Token(_), .. } => false,
            T::TlsRejected { .. } | T::Sasl { .. } => true,
            T::Broker { code, .. } => code.is_authentication() && !code.is_retriable(),
            _ => false,
        };
        let msg = error.to_string();
        let refused = tls.then(|| ProduceError::transport(error, Persistence::NotPersisted));
        self.connect_failed(now, conn, msg, refused);
    }

    /// Connection attempts the shell has not answered in time fail (and whatever it says
    /// about them later is ignored).
    pub(crate) fn give_up_connects(&mut self, now: Tick) {
        for conn in self.links.connects_overdue(now) {
            let msg = format!(
                "connection attempt to {} not done within {:?} (resolve, handshake, Hello, authentication, data streams)",
                self.links.list[conn.link].name,
                self.links.connect_allowance()
            );
            self.connect_failed(now, conn, msg, None);
            self.links.retire(conn);
        }
    }

    fn connect_failed(&mut self, now: Tick, conn: ConnId, msg: String, refused: Option<ProduceError>) {
        let failures = self.links.list[conn.link].slots[conn.slot].failures + 1;
        let backoff = self.cfg.reconnect_backoff.delay(failures, 0.5).mul_f64(0.8 + 0.4 * self.jitter());
        tracing::warn!(broker = %self.links.list[conn.link].name, error = %msg, ?backoff, "connect failed");
        if self.links.on_connect_failed(now, conn, msg, refused, backoff) {
            tracing::warn!(broker = %self.links.list[conn.link].name, failures, "circuit breaker open");
            self.fail_link_pending(now, conn.link);
        }
        // A broker that cannot be reached may have lost its partitions to another.
        self.refresh_soon(now);
    }

    /// A reset stream's replacement is open.
    pub(crate) fn on_stream_opened(&mut self, stream: StreamId) {
        if !self.links.is_current(stream.conn) {
            return;
        }
        if let SlotState::Up { streams, .. } = &mut self.links.list[stream.conn.link].slots[stream.conn.slot].state {
            if let Some(s) = streams.get_mut(stream.index) {
                if s.gen < stream.gen {
                    *s = DataStream::new(stream.gen);
                }
            }
        }
    }

    /// Gives up attempts past their deadline; starts connection attempts that are due.
    pub(crate) fn maintain_links(&mut self, now: Tick) {
        self.give_up_connects(now);
        if self.closing.is_some() && self.is_idle() {
            return;
        }
        let streams = self.links.streams_per_connection();
        for c in self.links.connects_due(now) {
            self.actions.push_back(super::Action::Connect {
                conn: c.conn,
                addr: c.addr,
                streams,
                reload_tls: c.reload_tls,
            });
        }
    }

    /// Why batches for `link` fail fast: the refused certificate, or the open breaker.
    fn link_error(&self, link: usize) -> ProduceError {
        use crate::producer::error::{ErrorKind, Persistence};
        let l = &self.links.list[link];
        match &l.refused {
            Some(e) => e.clone(),
            None => ProduceError::new(
                ErrorKind::CircuitOpen,
                Persistence::NotPersisted,
                format!(
                    "broker {} unavailable (circuit breaker open after {} failures): {}",
                    l.name,
                    l.breaker.failures(),
                    l.last_error.as_deref().unwrap_or("connection failed")
                ),
            ),
        }
    }

    /// When no broker is left that may answer (every link fails fast), why: what handles
    /// waiting for metadata fail with.
    pub(crate) fn no_link_left(&self, now: Tick) -> Option<ProduceError> {
        let list = &self.links.list;
        if list.is_empty() || !list.iter().all(|l| l.failing_fast(now)) {
            return None;
        }
        // A refused certificate says more than an open breaker.
        let i = list.iter().position(|l| l.refused.is_some()).unwrap_or(0);
        Some(self.link_error(i))
    }

    /// The breaker is open (or the broker refused us) and no connection to the broker is
    /// up: fail fast every batch waiting for that broker, with what we know about its
    /// persistence.
    pub(crate) fn fail_link_pending(&mut self, now: Tick, link: usize) {
        #[cfg(test)]
        {
            self.fail_link_calls += 1;
        }
        let err = self.link_error(link);
        let mut gap = false;
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                if self.route(&self.topics.list[tid].parts[p]) != link {
                    continue;
                }
                let gone = self.topics.list[tid].parts[p]
                    .window
                    .take(|s| !matches!(s.state, super::window::SlotState::InFlight { .. }));
                gap |= !gone.is_empty();
                for s in gone {
                    self.fail_slot(s, err.clone());
                }
            }
        }
        if gap {
            self.resync_windows();
        }
        // Handles waiting for metadata fail too, unless another broker may still answer.
        if let Some(err) = self.no_link_left(now) {
            for reply in self.topics.take_waiters(&self.acc) {
                self.outcomes.push_back(super::Outcome::Metadata { reply, result: Err(err.clone()) });
            }
        }
    }
}
