//! Timers: request timeouts (a request the broker did not answer in time) and delivery
//! timeouts (the bound on the time from `send` to an outcome).

use super::producer_id::PidState;
use super::{ConnId, Core, StreamId, Tick};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};

impl Core {
    /// The shell wrote the next `frames` requests handed to `stream`.
    pub(crate) fn on_written(&mut self, _now: Tick, stream: StreamId, frames: usize) {
        let Some(st) = self.links.stream_by_id(stream) else { return };
        for _ in 0..frames {
            if st.unwritten.pop_front().is_none() {
                break;
            }
        }
    }

    /// Deadlines of the timers below, for `poll_timeout`.
    pub(crate) fn timeout_deadlines(&self) -> Vec<Tick> {
        Vec::new()
    }

    /// Request timeouts close the connection; delivery timeouts fail batches.
    pub(crate) fn check_timeouts(&mut self, now: Tick) {
        let mut expired = Vec::new();
        for t in &self.topics.list {
            for part in &t.parts {
                if let Some((stream, sent_at)) = part.window.oldest_in_flight() {
                    if now.saturating_duration_since(sent_at) >= self.cfg.request_timeout {
                        expired.push(stream.conn);
                    }
                }
            }
        }
        for conn in expired {
            self.expire_connection(now, conn);
        }
        let timeout = self.cfg.delivery_timeout;
        let mut gap = false;
        for t in 0..self.topics.list.len() {
            for p in 0..self.topics.list[t].parts.len() {
                let gone = self.topics.list[t].parts[p]
                    .window
                    .take_expired(|s| now.saturating_duration_since(s.payload.first_enqueued) >= timeout);
                for s in gone {
                    gap = true;
                    let never_sent = s.attempts == 0;
                    let msg = format!(
                        "{}-{p}: delivery timeout of {timeout:?} passed {}",
                        self.topics.list[t].queues.name,
                        if never_sent { "before the batch could be sent" } else { "while retrying" }
                    );
                    self.fail_slot(s, ProduceError::new(ErrorKind::DeliveryTimeout, Persistence::NotPersisted, msg));
                }
            }
        }
        if gap && self.pid.state != PidState::Off {
            self.request_bump();
        }
    }

    /// Closes a connection whose request timed out, as if it had broken.
    fn expire_connection(&mut self, now: Tick, conn: ConnId) {
        if !self.links.is_current(conn) {
            return;
        }
        let name = &self.links.list[conn.link].name;
        let msg = format!("request to {name} timed out after {:?}", self.cfg.request_timeout);
        self.on_connection_lost(
            now,
            conn,
            ProduceError::new(ErrorKind::Transport, Persistence::PossiblyPersisted, msg),
        );
    }
}
