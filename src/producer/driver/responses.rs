//! Answers and timers: where a produce response is matched to its batch, retries are
//! decided, a broken sequence starts an epoch bump, and request and delivery timeouts
//! fire.

use std::time::{Duration, Instant};

use super::{Driver, PidState};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::protocol::frame::ProduceResult;
use crate::protocol::{ErrorCode, Frame, Payload};
use crate::transport::pool::ConnId;
use crate::transport::TransportError;

impl Driver {
    pub(crate) fn on_response(&mut self, id: ConnId, stream: usize, frame: Frame) {
        let conns = self.cfg.connections_per_broker;
        let Some((_, st)) = self.stream_of(id.link, stream * conns + id.slot) else { return };
        let expected = st.expected.pop_front();
        let addr = self.links[id.link].addr.expect("connected link has an address");
        let Some((corr, t, p)) = expected.filter(|(c, _, _)| *c == frame.correlation_id) else {
            let detail = format!("response with correlation id {} does not match the request", frame.correlation_id);
            self.connection_lost(id, TransportError::UnexpectedResponse { addr, detail });
            return;
        };
        let result = match frame.payload {
            Payload::ProduceResult(r) => r,
            Payload::Error(e) => ProduceResult {
                error: e.code,
                duplicate: false,
                base_offset: -1,
                log_append_time: -1,
                message: e.message,
            },
            other => {
                let detail = format!("{:?} in answer to a produce request", other.kind());
                self.connection_lost(id, TransportError::UnexpectedResponse { addr, detail });
                return;
            }
        };
        self.on_produce_result(t as usize, p, corr, result);
    }

    fn on_produce_result(&mut self, t: usize, p: u32, corr: u32, r: ProduceResult) {
        let now = Instant::now();
        let pu = p as usize;
        if r.error == ErrorCode::None {
            if let Some(s) = self.topics[t].parts[pu].window.complete(corr) {
                self.complete_ok(t, p, s, Some(r.base_offset), now);
            }
            return;
        }
        let idempotent = self.pid != PidState::Off;
        // A negative base offset means the broker refused before appending.
        let appended = r.base_offset >= 0;
        let topic = self.topics[t].queues.name.clone();
        let message = format!("{topic}-{p}: broker answered {}: {}", r.error, r.message);
        match r.error {
            ErrorCode::InvalidProducerEpoch if idempotent => {
                tracing::error!(%message, "producer fenced; failing everything");
                self.pid = PidState::Fenced;
                self.fail_everything(ProduceError::new(ErrorKind::Fenced, Persistence::NotPersisted, message));
            }
            ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId | ErrorCode::InvalidProducerId
                if idempotent =>
            {
                let window = &mut self.topics[t].parts[pu].window;
                let first = window.is_first(corr);
                window.requeue_refused(corr, Duration::ZERO, now, false);
                if first {
                    tracing::warn!(%message, "sequence broken; draining and bumping the epoch");
                    self.request_bump();
                }
            }
            code => {
                let window = &mut self.topics[t].parts[pu].window;
                let Some(i) = window.index_of(corr) else { return };
                let attempts = window.slot(i).attempts;
                let retry = code.is_retriable() && (idempotent || !appended) && attempts <= self.cfg.retries;
                if retry {
                    let unit = self.jitter();
                    let backoff = self.cfg.retry_backoff.delay(attempts, unit);
                    tracing::debug!(%message, ?backoff, "retrying batch");
                    self.topics[t].parts[pu].window.requeue_refused(corr, backoff, now, appended);
                } else {
                    let s = self.topics[t].parts[pu].window.complete(corr).expect("found above");
                    let persistence = if appended { Persistence::PossiblyPersisted } else { Persistence::NotPersisted };
                    let mut s = s;
                    s.maybe_persisted = appended;
                    self.fail_slot(s, ProduceError::new(ErrorKind::Broker(code), persistence, message));
                    if idempotent {
                        // The failed batch leaves a hole in the sequence.
                        self.request_bump();
                    }
                }
            }
        }
    }

    /// Request timeouts close the connection; delivery timeouts fail batches.
    pub(crate) fn check_timeouts(&mut self, now: Instant, tick: crate::producer::clock::Tick) {
        let conns = self.cfg.connections_per_broker;
        let mut expired_conns = Vec::new();
        for t in &self.topics {
            for part in &t.parts {
                if let Some((gen, sent_at)) = part.window.oldest_in_flight() {
                    if now.saturating_duration_since(sent_at) >= self.cfg.request_timeout {
                        expired_conns.push((part.link, part.stream % conns, gen));
                    }
                }
            }
        }
        for (link, slot, gen) in expired_conns {
            self.expire_connection(link, slot, gen);
        }
        let timeout = self.cfg.delivery_timeout;
        let mut gap = false;
        for t in 0..self.topics.len() {
            for p in 0..self.topics[t].parts.len() {
                let gone = self.topics[t].parts[p]
                    .window
                    .take_expired(|s| tick.saturating_duration_since(s.payload.first_enqueued) >= timeout);
                for s in gone {
                    gap = true;
                    let never_sent = s.attempts == 0;
                    let msg = format!(
                        "{}-{p}: delivery timeout of {timeout:?} passed {}",
                        self.topics[t].queues.name,
                        if never_sent { "before the batch could be sent" } else { "while retrying" }
                    );
                    self.fail_slot(s, ProduceError::new(ErrorKind::DeliveryTimeout, Persistence::NotPersisted, msg));
                }
            }
        }
        if gap && self.pid != PidState::Off {
            self.request_bump();
        }
    }
}
