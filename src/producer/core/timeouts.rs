//! Timers: request timeouts, control-request timeouts and delivery timeouts.
//!
//! - A produce request is given `request_timeout` plus a [`margin`], counted from the
//!   moment the shell wrote it (or, while the write has not completed, from when it was
//!   handed to the shell: a stream blocked by flow control is stuck too): the broker is
//!   told `request_timeout` and answers REQUEST_TIMED_OUT itself when it cannot satisfy
//!   the acks in time; only silence beyond that means the stream is stuck. Then that one
//!   stream is reset and replaced; other partitions' streams, and the connection, go on.
//! - A control request (metadata, producer id) gets the same allowance from when it was
//!   sent; then it is asked again (nothing else would ever ask again).
//! - `delivery_timeout` bounds the time from `send` to an outcome: a batch still queued,
//!   waiting or in flight when its oldest record reaches it fails with `DeliveryTimeout`
//!   (in flight: possibly persisted).

use std::time::Duration;

use super::{ControlKind, Core, StreamId, Tick};
use crate::producer::clock::later;
use crate::producer::error::{ErrorKind, Persistence, ProduceError};

/// How much longer than `request_timeout` the producer waits for an answer: the broker
/// is told `request_timeout` (the produce `timeout_ms`) and must get to answer
/// REQUEST_TIMED_OUT itself, which it can only do after reading the request.
pub(crate) fn margin(request_timeout: Duration) -> Duration {
    (request_timeout / 5).max(Duration::from_millis(500))
}

impl Core {
    fn request_deadline(&self) -> Duration {
        self.cfg.request_timeout.saturating_add(margin(self.cfg.request_timeout))
    }

    /// Deadlines of the timers below, for `poll_timeout`.
    pub(crate) fn timeout_deadlines(&self) -> Vec<Tick> {
        let rt = self.request_deadline();
        let dt = self.cfg.delivery_timeout;
        let mut out = Vec::new();
        for t in &self.topics.list {
            for p in &t.parts {
                out.extend(p.window.in_flight_batches().map(|(_, _, w)| later(w, rt)).min());
                out.extend(p.window.iter().map(|s| later(s.payload.first_enqueued, dt)).min());
                out.extend(p.oldest.map(|o| later(o, dt)));
            }
        }
        out.extend(self.control.values().map(|c| c.deadline));
        out
    }

    /// Fires every timer that is due.
    pub(crate) fn check_timeouts(&mut self, now: Tick) {
        self.check_request_timeouts(now);
        self.check_control_timeouts(now);
        self.check_delivery_timeouts(now);
    }

    fn check_request_timeouts(&mut self, now: Tick) {
        let deadline = self.request_deadline();
        let mut stuck: Vec<StreamId> = Vec::new();
        for t in &self.topics.list {
            for part in &t.parts {
                for (_, stream, started) in part.window.in_flight_batches() {
                    if now.saturating_duration_since(started) >= deadline && !stuck.contains(&stream) {
                        stuck.push(stream);
                    }
                }
            }
        }
        for stream in stuck {
            let name = &self.links.list[stream.conn.link].name;
            let msg = format!("no answer from {name} within {deadline:?} of sending a request");
            tracing::warn!(%msg, stream = stream.index, "resetting the stream");
            self.reset_stream(
                now,
                stream,
                ProduceError::new(ErrorKind::Transport, Persistence::PossiblyPersisted, msg),
            );
        }
    }

    fn check_control_timeouts(&mut self, now: Tick) {
        let expired: Vec<u64> = self.control.iter().filter(|(_, c)| now >= c.deadline).map(|(t, _)| *t).collect();
        for tag in expired {
            let Some(call) = self.control.remove(&tag) else { continue };
            let timeout = self.request_deadline();
            tracing::warn!(?timeout, "a control request went unanswered; asking again");
            let addr = "0.0.0.0:0".parse().expect("literal");
            let error = crate::transport::TransportError::Timeout { addr, timeout };
            match call.kind {
                ControlKind::InitPid => self.on_init_pid(now, Err(error)),
                ControlKind::Metadata(topics, link) => self.on_metadata_answer(now, topics, link, Err(error)),
            }
        }
    }

    fn check_delivery_timeouts(&mut self, now: Tick) {
        let timeout = self.cfg.delivery_timeout;
        let mut any = false;
        for t in 0..self.topics.list.len() {
            for p in 0..self.topics.list[t].parts.len() {
                let gone = self.topics.list[t].parts[p]
                    .window
                    .take(|s| now.saturating_duration_since(s.payload.first_enqueued) >= timeout);
                for s in gone {
                    any = true;
                    let when = if matches!(s.state, super::window::SlotState::InFlight { .. }) {
                        "while in flight"
                    } else if s.attempts == 0 {
                        "before the batch could be sent"
                    } else {
                        "while retrying"
                    };
                    let msg = format!(
                        "{}-{p}: delivery timeout of {timeout:?} passed {when}",
                        self.topics.list[t].queues.name
                    );
                    let persistence =
                        if s.may_be_stored() { Persistence::PossiblyPersisted } else { Persistence::NotPersisted };
                    self.fail_slot(s, ProduceError::new(ErrorKind::DeliveryTimeout, persistence, msg));
                }
            }
        }
        if any {
            self.resync_windows();
        }
    }
}
