//! Where a retry is decided: a produce answer is matched to its batch, which is then
//! acknowledged, retried after a back-off, split (too large), or failed with what is known
//! about whether it is stored; a lost stream or connection puts its in-flight batches back
//! in line (idempotent: the broker's dedup recognises what did land) or fails them
//! (without idempotence a resend could duplicate); an out-of-order answer breaks the
//! partition's numbering; a refused current epoch fences the producer.
//!
//! Which answers settle whether a batch is stored (see `window`): success, duplicate,
//! OUT_OF_ORDER_SEQUENCE and UNKNOWN_PRODUCER_ID are given after the broker's dedup lookup;
//! every other refusal is given before it and settles nothing about earlier attempts.

use std::time::Duration;

use super::producer_id::PidState;
use super::window::Attempt;
use super::{Action, ConnId, Core, StreamId, Tick};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;
use crate::protocol::cluster::ClusterPayload;
use crate::protocol::frame::ProduceResult;
use crate::protocol::{ErrorCode, Frame, Payload};
use crate::transport::TransportError;

impl Core {
    pub(crate) fn on_response(&mut self, now: Tick, stream: StreamId, frame: Frame) {
        let Some(st) = self.links.stream_by_id(stream) else { return };
        let expected = st.answers.pop_front();
        let Some(e) = expected.filter(|e| e.corr == frame.correlation_id) else {
            let detail = format!("response with correlation id {} does not match the request", frame.correlation_id);
            self.stream_failed(now, stream, detail);
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
            Payload::Cluster(ClusterPayload::NotLeader(n)) => {
                // A cluster's leader moved: route to the new one and retry there with the
                // same producer id, epoch and sequence (the new leader answers a batch it
                // already has as a duplicate). The old leader may have appended this batch
                // before it lost the leadership (an acks=all wait), so the attempt counts as
                // possibly stored (a base offset >= 0 says "appended").
                self.on_not_leader(now, e.topic as usize, e.partition as usize, &n);
                ProduceResult {
                    error: n.error,
                    duplicate: false,
                    base_offset: 0,
                    log_append_time: -1,
                    message: format!("not the leader; the leader is broker {} at epoch {}", n.leader, n.leader_epoch),
                }
            }
            other => {
                let detail = format!("{:?} in answer to a produce request", other.kind());
                self.stream_failed(now, stream, detail);
                return;
            }
        };
        if result.error == ErrorCode::None {
            // Record i of the batch is at base_offset + i: offsets that do not exist (negative,
            // or past i64::MAX) make no sense on this stream either.
            let window = &self.topics.list[e.topic as usize].parts[e.partition as usize].window;
            let records = window.index_of(e.corr).map_or(1, |i| window.slot(i).records);
            let last = result.base_offset.checked_add(i64::from(records.max(1)) - 1);
            if result.base_offset < 0 || last.is_none() {
                let detail = format!("acknowledged at offset {} (for {records} records)", result.base_offset);
                self.stream_failed(now, stream, detail);
                return;
            }
        }
        self.on_produce_result(now, e.topic as usize, e.partition, e.corr, result);
    }

    fn on_produce_result(&mut self, now: Tick, t: usize, p: u32, corr: u32, r: ProduceResult) {
        let pu = p as usize;
        let window = &mut self.topics.list[t].parts[pu].window;
        let Some(i) = window.index_of(corr) else { return }; // expired meanwhile
        if r.error == ErrorCode::None {
            if r.duplicate {
                ProducerMetrics::add(&self.metrics.duplicates, 1);
                window.slot(i).payload.span.in_scope(|| tracing::debug!("the broker had stored this batch already"));
            }
            let s = window.ack(corr).expect("found above");
            self.complete_ok(now, t, p, s, Some(r.base_offset));
            // A window this ack drained is resynced in the next `handle_timeout`, before
            // anything is sent (not here: this is the hot path, once per batch).
            return;
        }
        let idempotent = self.pid.state != PidState::Off;
        // A negative base offset means the broker refused before appending.
        let appended = r.base_offset >= 0;
        let stamp = window.slot(i).payload.stamp;
        let attempts = window.slot(i).attempts;
        let unit = self.jitter();
        let backoff = self.cfg.retry_backoff.delay(attempts, unit);
        let topic = self.topics.list[t].queues.name.clone();
        let message = format!("{topic}-{p}: broker answered {}: {}", r.error, r.message);
        match r.error {
            ErrorCode::InvalidProducerEpoch if idempotent => {
                let current = self.pid.current();
                let stamped = (stamp.producer_id, stamp.producer_epoch);
                // Stamped with an id and epoch we have since left: one of ours from before a
                // bump. Stamped with the current one while our own bump from it may already
                // be done at the broker (asked, no answer yet): ours too. Anything else:
                // another producer took our id.
                let stale = current.is_some_and(|c| c != stamped);
                let own_bump = current == Some(stamped) && self.pid.bump_from == Some(stamp.producer_epoch);
                if !stale && !own_bump {
                    let window = &mut self.topics.list[t].parts[pu].window;
                    window.refused(corr, Duration::ZERO, now, Attempt::NotStored);
                    self.fence(now, message);
                    return;
                }
                // With per-partition epochs the broker answers this after its dedup
                // lookup: not stored. Otherwise it may have refused before the lookup.
                let attempt = if self.per_partition_epochs() { Attempt::Settled } else { Attempt::NotStored };
                let window = &mut self.topics.list[t].parts[pu].window;
                window.refused(corr, backoff, now, attempt);
                if own_bump {
                    // The partition waits for the bump's answer, then restarts in it.
                    window.sequence_broken();
                    if self.pid.bump == super::producer_id::Bump::None {
                        self.pid.bump = super::producer_id::Bump::Wanted { epoch: stamp.producer_epoch };
                    }
                }
                self.resync_windows();
            }
            ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId if idempotent => {
                let window = &mut self.topics.list[t].parts[pu].window;
                let first = window.is_first(corr);
                // A batch with an attempt still on its way stays unresolved and the partition
                // drains up to it, resending until it is acknowledged or expires: after a
                // back-off then, not in a tight loop.
                let wait = if window.iter().any(|s| s.unanswered) { backoff } else { Duration::ZERO };
                window.refused(corr, wait, now, Attempt::Settled);
                if first {
                    // For a later batch this only echoes a refusal of an earlier one.
                    tracing::warn!(%message, "sequence broken; draining the partition, then a new epoch");
                    window.sequence_broken();
                }
                self.resync_windows();
            }
            ErrorCode::InvalidProducerId if idempotent => {
                // The broker does not know our id (never issued to us, or forgotten): the
                // partition drains, then the producer takes a fresh id. Refused before the
                // dedup lookup: what earlier attempts may have stored stays unknown.
                tracing::warn!(%message, "producer id unknown to the broker; a fresh one follows");
                let window = &mut self.topics.list[t].parts[pu].window;
                window.refused(corr, backoff, now, Attempt::NotStored);
                window.sequence_broken();
                self.pid.fresh_id = true;
                self.resync_windows();
            }
            ErrorCode::BatchTooLarge | ErrorCode::FrameTooLarge => {
                let window = &mut self.topics.list[t].parts[pu].window;
                window.refused(corr, Duration::ZERO, now, Attempt::NotStored);
                if window.slot(i).maybe_persisted {
                    // An earlier attempt may have stored it whole: never split that one.
                    let s = window.remove_at(i);
                    self.fail_slot(
                        s,
                        ProduceError::new(ErrorKind::Broker(r.error), Persistence::PossiblyPersisted, message),
                    );
                } else {
                    self.split_or_fail(now, t, pu, i, message);
                }
                self.resync_windows();
            }
            code => {
                let retry = code.is_retriable() && (idempotent || !appended) && attempts <= self.cfg.retries;
                let attempt = if appended { Attempt::Appended } else { Attempt::NotStored };
                if retry {
                    let span = &self.topics.list[t].parts[pu].window.slot(i).payload.span;
                    span.in_scope(|| tracing::debug!(%message, ?backoff, "retrying batch"));
                    self.topics.list[t].parts[pu].window.refused(corr, backoff, now, attempt);
                    if matches!(
                        code,
                        ErrorCode::UnknownTopicOrPartition
                            | ErrorCode::NotLeader
                            | ErrorCode::UnknownLeaderEpoch
                            | ErrorCode::MetadataUnavailable
                    ) {
                        // Stale metadata (a partition moved, or a topic was recreated): the
                        // partition waits for the refresh instead of asking the same broker
                        // again (and using up its retries there).
                        self.topics.list[t].parts[pu].stale_leader = true;
                        self.refresh_soon(now);
                    }
                } else {
                    let window = &mut self.topics.list[t].parts[pu].window;
                    window.refused(corr, Duration::ZERO, now, attempt);
                    let s = window.remove_at(i);
                    let persistence =
                        if s.maybe_persisted { Persistence::PossiblyPersisted } else { Persistence::NotPersisted };
                    self.fail_slot(s, ProduceError::new(ErrorKind::Broker(code), persistence, message));
                    self.resync_windows();
                }
            }
        }
    }

    /// The broker answered something that makes no sense on this stream: give the stream up.
    fn stream_failed(&mut self, now: Tick, stream: StreamId, detail: String) {
        let name = &self.links.list[stream.conn.link].name;
        let msg = format!("unexpected response from {name}: {detail}");
        tracing::warn!(%msg, "resetting the stream");
        self.reset_stream(now, stream, ProduceError::new(ErrorKind::Transport, Persistence::PossiblyPersisted, msg));
    }

    /// One data stream broke (reset or finished by the broker, a write or read error): its
    /// in-flight batches lose their answers; a replacement stream is opened.
    pub(crate) fn on_stream_lost(&mut self, now: Tick, stream: StreamId, error: TransportError) {
        self.reset_stream(now, stream, ProduceError::transport(error, Persistence::PossiblyPersisted));
    }

    /// Gives up a data stream: its in-flight batches go back in line (or fail without
    /// idempotence), and the shell replaces it.
    pub(crate) fn reset_stream(&mut self, now: Tick, stream: StreamId, error: ProduceError) {
        let Some(st) = self.links.stream_by_id(stream) else { return };
        if !st.up {
            return;
        }
        st.up = false;
        st.answers.clear();
        st.unwritten.clear();
        self.actions.push_back(Action::ResetStream { stream });
        self.requeue_lost(now, |s| s == stream, error);
    }

    /// A live connection broke: in-flight batches on it lose their answer.
    pub(crate) fn on_connection_lost(&mut self, now: Tick, conn: ConnId, error: ProduceError) {
        if !self.links.is_current(conn)
            || !matches!(self.links.list[conn.link].slots[conn.slot].state, super::links::SlotState::Up { .. })
        {
            return;
        }
        tracing::warn!(broker = %self.links.list[conn.link].name, slot = conn.slot, error = %error, "connection lost");
        self.actions.push_back(Action::Close { conn, reason: "connection lost" });
        // A connection lost before it was up for `circuit_breaker_recovery` counts as a
        // failed attempt: a broker that accepts and then drops every connection is backed
        // off more and more, and eventually opens the breaker, like an unreachable one.
        let quick = self.links.quick_loss(now, conn, self.cfg.circuit_breaker_recovery);
        let failures = if quick { self.links.list[conn.link].slots[conn.slot].failures + 1 } else { 1 };
        let unit = self.jitter();
        let backoff = self.cfg.reconnect_backoff.delay(failures, unit);
        let opened = self.links.on_lost(now, conn, error.message().to_owned(), backoff, quick);
        self.requeue_lost(now, |s| s.conn == conn, error);
        // In a cluster the broker may be gone for good and its partitions led elsewhere:
        // ask for fresh metadata rather than wait for its return.
        self.refresh_soon(now);
        if opened {
            tracing::warn!(broker = %self.links.list[conn.link].name, failures, "circuit breaker open");
            self.fail_link_pending(now, conn.link);
        }
    }

    fn requeue_lost(&mut self, now: Tick, lost: impl Fn(StreamId) -> bool + Copy, error: ProduceError) {
        let unit = self.jitter();
        let retry = self.cfg.retry_backoff.delay(1, unit);
        let idempotent = self.pid.state != PidState::Off;
        let err = error.with_persistence(Persistence::PossiblyPersisted);
        for tid in 0..self.topics.list.len() {
            for p in 0..self.topics.list[tid].parts.len() {
                let window = &mut self.topics.list[tid].parts[p].window;
                if idempotent {
                    // Resent in order; the broker's dedup answers any that did land with
                    // their original offsets.
                    window.lost(lost, retry, now);
                } else {
                    // Without idempotence a resend could duplicate: report instead.
                    for s in window.take_in_flight(lost) {
                        self.fail_slot(s, err.clone());
                    }
                }
            }
        }
    }
}
