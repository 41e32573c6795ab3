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
//! - `producer_id`: the producer id and epoch, epoch bumps, fencing;
//! - `outcomes`: failing records (with the persistence each may claim), purge, flush, close;
//! - `io`: the identifiers, inputs and outputs shared with the shell.

mod batches;
pub(crate) mod breaker;
mod io;
mod links;
mod metadata;
mod outcomes;
mod producer_id;
mod retry;
mod timeouts;
pub(crate) mod window;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::oneshot;

use super::accumulator::{Accumulator, FlushPoint};
use super::clock::later;
use super::config::ProducerConfig;
use super::error::{Persistence, ProduceError};
use super::metrics::ProducerMetrics;
use crate::protocol::{Frame, Payload};
use crate::transport::TransportError;

pub(crate) use io::{Action, ConnId, FlushReply, HelloInfo, MetadataReply, Outcome, StreamId, Transmit};
use links::Links;
use metadata::Topics;
pub(crate) use outcomes::closed_error;
use outcomes::FlushWaiter;
use producer_id::ProducerId;

/// The core's notion of time: a monotonic instant given by the shell (or a test).
pub(crate) type Tick = super::clock::Tick;

/// A control request waiting for its answer.
struct ControlCall {
    kind: ControlKind,
    /// When to give up on it.
    deadline: Tick,
}

/// What a control request was for.
enum ControlKind {
    /// Topics asked for, and the link the request went to.
    Metadata(Vec<Arc<str>>, usize),
    /// InitProducerId.
    InitPid,
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
    flushes: Vec<FlushWaiter>,
    /// What the first `close()` was answered (later `close`/`flush` calls get it too).
    close_result: Option<Result<(), ProduceError>>,
    /// Close deadline, once closing.
    closing: Option<Tick>,
    /// When `handle_timeout` last ran: every deadline after it is still to be acted on.
    last_run: Tick,
    fatal: Option<ProduceError>,
    finished: bool,
    transmits: VecDeque<Transmit>,
    /// Passes of `fail_link_pending` (each walks every partition), for a test of the work
    /// done per round.
    #[cfg(test)]
    fail_link_calls: usize,
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
            close_result: None,
            flushes: Vec::new(),
            closing: None,
            last_run: now,
            fatal: None,
            finished: false,
            transmits: VecDeque::new(),
            #[cfg(test)]
            fail_link_calls: 0,
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

    /// `flush()`: answer when every record enqueued before the call (`point`, read at the
    /// call) is done; meanwhile every partition is sealed without waiting for linger.
    pub(crate) fn handle_flush(&mut self, _now: Tick, point: FlushPoint, reply: FlushReply) {
        if let Some(e) = &self.fatal {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        self.flushes.push(FlushWaiter::new(point, reply, false));
    }

    /// `close(timeout)`: flush (what was enqueued before `point`), fail what is left at the
    /// deadline, then finish. `None`: every handle is gone (deliver within the delivery
    /// timeout, nobody to answer).
    pub(crate) fn handle_close(&mut self, now: Tick, timeout: Duration, reply: Option<(FlushPoint, FlushReply)>) {
        let deadline = later(now, timeout);
        self.closing = Some(self.closing.map_or(deadline, |d| d.min(deadline)));
        if let Some((point, reply)) = reply {
            if let Some(e) = &self.fatal {
                let _ = reply.send(Err(e.clone()));
                return;
            }
            self.flushes.push(FlushWaiter::new(point, reply, true));
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
        self.last_run = self.last_run.max(now);
        self.collect_ready(now);
        // While a flush or the close waits, nothing waits for linger (as Kafka's flush).
        let flushing = !self.flushes.is_empty() || self.closing.is_some();
        self.seal(now, flushing);
        // Timeouts before sending: a batch past its delivery deadline expires unsent (not
        // persisted) instead of going out and expiring in flight (possibly persisted, and
        // an epoch bump); a stuck stream is reset before anything more is queued on it.
        self.check_timeouts(now);
        self.resync_windows();
        self.send(now);
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

    /// When `handle_timeout` must run next (even if nothing else happens); `None` when
    /// only an input can make anything happen. Pass the `now` of the last `handle_timeout`:
    /// a deadline that came due after that run is returned even if it is before a later
    /// `now` (the timer then fires at once), so no deadline is ever dropped.
    pub(crate) fn poll_timeout(&self, now: Tick) -> Option<Tick> {
        if self.finished {
            return None;
        }
        let _ = now;
        self.next_timeout()
    }

    /// True once closed (or fenced) and every answer was handed out: the shell stops.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished && self.outcomes.is_empty() && self.actions.is_empty()
    }

    /// Once finished, what a later `flush()` or `close()` returns: what the first close was
    /// answered (`Ok` after a clean close, its error otherwise), or the fatal error.
    pub(crate) fn end_result(&self) -> Result<(), ProduceError> {
        match &self.fatal {
            Some(e) => Err(e.clone()),
            None => self.close_result.clone().unwrap_or(Ok(())),
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &ProducerConfig {
        &self.cfg
    }

    // ----------------------------------------------------------------------------------
    // Shared helpers
    // ----------------------------------------------------------------------------------

    /// The earliest deadline after the last `handle_timeout`. There is no heartbeat: every
    /// decision `handle_timeout` takes at a time of its own is among these deadlines, so a
    /// missing one shows up as a stall in the tests (which move time only as far as this
    /// says), not as a decision taken late.
    fn next_timeout(&self) -> Option<Tick> {
        let mut d: Option<Tick> = None;
        // `handle_timeout(last_run)` did everything it could then: a deadline at or before
        // it (a linger while the window is full, a back-off while the link is down) waits
        // for an event, not for the timer: without this filter the shell would spin. A
        // deadline after it has not been acted on, whatever the time is now.
        let last_run = self.last_run;
        let mut consider = |t: Tick| {
            if t > last_run {
                d = Some(d.map_or(t, |d| d.min(t)));
            }
        };
        for &(tid, p) in &self.topics.active {
            if let Some(since) = self.topics.list[tid as usize].parts[p as usize].since {
                consider(later(since, self.cfg.linger));
            }
        }
        for t in &self.topics.list {
            for p in &t.parts {
                if let Some(x) = p.window.next_ready_time() {
                    consider(x);
                }
            }
        }
        if let Some(x) = self.links.next_timeout(last_run) {
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
        if let Some(x) = self.topics.retry_due() {
            consider(x);
        }
        for x in self.timeout_deadlines() {
            consider(x);
        }
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
        let timeout = self.cfg.request_timeout.saturating_add(timeouts::margin(self.cfg.request_timeout));
        self.control.insert(tag, ControlCall { kind, deadline: later(now, timeout) });
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
}
