//! Where a retry is decided: a produce answer is matched to its batch and the batch is
//! acknowledged, retried after a back-off, or failed (with what is known about whether it
//! is stored); a lost connection puts its in-flight batches back in line (idempotent) or
//! fails them (not idempotent: a resend could duplicate); a broken sequence starts an
//! epoch bump; a refused epoch fences the producer.

use std::time::Duration;

use super::producer_id::PidState;
use super::{ConnId, Core, StreamId, Tick};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::protocol::frame::ProduceResult;
use crate::protocol::{ErrorCode, Frame, Payload};
use crate::transport::TransportError;

impl Core {
    pub(crate) fn on_response(&mut self, now: Tick, stream: StreamId, frame: Frame) {
        let Some(st) = self.links.stream_by_id(stream) else { return };
        let expected = st.answers.pop_front();
        let Some(e) = expected.filter(|e| e.corr == frame.correlation_id) else {
            let detail = format!("response with correlation id {} does not match the request", frame.correlation_id);
            let err = self.unexpected(stream, detail);
            self.on_connection_lost(now, stream.conn, err);
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
                let err = self.unexpected(stream, detail);
                self.on_connection_lost(now, stream.conn, err);
                return;
            }
        };
        self.on_produce_result(now, e.topic as usize, e.partition, e.corr, result);
    }

    fn on_produce_result(&mut self, now: Tick, t: usize, p: u32, corr: u32, r: ProduceResult) {
        let pu = p as usize;
        if r.error == ErrorCode::None {
            if let Some(s) = self.topics.list[t].parts[pu].window.complete(corr) {
                self.complete_ok(now, t, p, s, Some(r.base_offset));
            }
            return;
        }
        let idempotent = self.pid.state != PidState::Off;
        // A negative base offset means the broker refused before appending.
        let appended = r.base_offset >= 0;
        let topic = self.topics.list[t].queues.name.clone();
        let message = format!("{topic}-{p}: broker answered {}: {}", r.error, r.message);
        match r.error {
            ErrorCode::InvalidProducerEpoch if idempotent => {
                let window = &mut self.topics.list[t].parts[pu].window;
                window.requeue_refused(corr, Duration::ZERO, now, false);
                self.fence(now, message);
            }
            ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId if idempotent => {
                let window = &mut self.topics.list[t].parts[pu].window;
                let first = window.is_first(corr);
                window.requeue_refused(corr, Duration::ZERO, now, false);
                if first {
                    tracing::warn!(%message, "sequence broken; draining and bumping the epoch");
                    self.request_bump();
                }
            }
            code => {
                let window = &mut self.topics.list[t].parts[pu].window;
                let Some(i) = window.index_of(corr) else { return };
                let attempts = window.slot(i).attempts;
                let retry = code.is_retriable() && (idempotent || !appended) && attempts <= self.cfg.retries;
                if retry {
                    let unit = self.jitter();
                    let backoff = self.cfg.retry_backoff.delay(attempts, unit);
                    tracing::debug!(%message, ?backoff, "retrying batch");
                    self.topics.list[t].parts[pu].window.requeue_refused(corr, backoff, now, appended);
                } else {
                    let mut s = self.topics.list[t].parts[pu].window.complete(corr).expect("found above");
                    let persistence = if appended { Persistence::PossiblyPersisted } else { Persistence::NotPersisted };
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

    fn unexpected(&self, stream: StreamId, detail: String) -> ProduceError {
        let name = &self.links.list[stream.conn.link].name;
        ProduceError::new(
            ErrorKind::Transport,
            Persistence::PossiblyPersisted,
            format!("unexpected response from {name}: {detail}"),
        )
    }

    /// A data stream broke: as the whole connection did.
    pub(crate) fn on_stream_lost(&mut self, now: Tick, stream: StreamId, error: TransportError) {
        if self.links.stream_by_id(stream).is_some() {
            self.on_connection_lost(now, stream.conn, ProduceError::transport(error, Persistence::PossiblyPersisted));
        }
    }

    /// A live connection broke: in-flight batches on it lose their answer.
    pub(crate) fn on_connection_lost(&mut self, now: Tick, conn: ConnId, error: ProduceError) {
        if !self.links.is_current(conn)
            || !matches!(self.links.list[conn.link].slots[conn.slot].state, super::links::SlotState::Up { .. })
        {
            return;
        }
        tracing::warn!(broker = %self.links.list[conn.link].name, slot = conn.slot, error = %error, "connection lost");
        self.actions.push_back(super::Action::Close { conn, reason: "connection lost" });
        let backoff = self.cfg.reconnect_backoff.delay(1, 0.5);
        self.links.on_lost(now, conn, error.message().to_owned(), backoff);
        let retry = self.cfg.retry_backoff.delay(1, 0.5);
        let idempotent = self.pid.state != PidState::Off;
        let err = error.with_persistence(Persistence::PossiblyPersisted);
        let lost = |s: StreamId| s.conn == conn;
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                let part = &mut self.topics.list[tid].parts[p];
                if idempotent {
                    // Resent in order on the next connection; the broker's dedup answers
                    // any that did land with their original offsets.
                    part.window.connection_lost(lost, retry, now);
                } else {
                    // Without idempotence a resend could duplicate: report instead.
                    let gone = part.window.take_in_flight(lost);
                    for s in gone {
                        self.fail_slot(s, err.clone());
                    }
                }
            }
        }
    }
}
