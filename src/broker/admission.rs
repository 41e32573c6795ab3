//! Admission: which incoming QUIC connections the broker takes on, before any TLS work.
//!
//! - A connection slot ([`BrokerConfig::max_connections`]) is a semaphore permit taken
//!   when the connection arrives and held until it ends: no check-then-increment race.
//! - A handshake also holds a permit of a smaller budget
//!   ([`BrokerConfig::max_handshakes`]) until it completes, fails or times out
//!   ([`BrokerConfig::handshake_timeout_ms`]): peers that start handshakes and never finish
//!   them hold at most that many slots, for at most that long.
//! - Under load (half the handshake budget in use) a peer whose address is not yet
//!   validated is sent a QUIC Retry first: the broker keeps no state for it until it
//!   echoes the Retry token from its real address, so a flood of Initial packets (spoofed
//!   or simply never continued) costs a stateless reply each.
//!
//! [`BrokerConfig::max_connections`]: super::BrokerConfig::max_connections
//! [`BrokerConfig::max_handshakes`]: super::BrokerConfig::max_handshakes
//! [`BrokerConfig::handshake_timeout_ms`]: super::BrokerConfig::handshake_timeout_ms

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::{dec, inc, BrokerMetrics};

/// What to do with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send a QUIC Retry (address validation); keep no state.
    Retry,
    /// Refuse: every connection slot is taken.
    RefuseConnections,
    /// Refuse: the handshake budget is used up.
    RefuseHandshakes,
    /// Take it on.
    Accept,
}

/// The admission rule, pure: `validated` says the peer echoed a Retry token, `may_retry`
/// that a Retry can still be sent (quinn's `Incoming::may_retry`).
pub(crate) fn decide(
    validated: bool,
    may_retry: bool,
    handshakes_in_progress: usize,
    max_handshakes: usize,
    slots_free: usize,
) -> Decision {
    if slots_free == 0 {
        return Decision::RefuseConnections;
    }
    let under_load = handshakes_in_progress.saturating_mul(2) >= max_handshakes;
    if under_load && !validated && may_retry {
        return Decision::Retry;
    }
    if handshakes_in_progress >= max_handshakes {
        return Decision::RefuseHandshakes;
    }
    Decision::Accept
}

/// The connection slots and the handshake budget.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    max_handshakes: usize,
    metrics: Arc<BrokerMetrics>,
}

/// A connection slot; the `connections_open` gauge counts it until dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<BrokerMetrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        dec(&self.metrics.connections_open);
    }
}

/// What an admitted connection holds: its slot, and a handshake permit to drop once the
/// handshake is over.
pub(crate) struct Admitted {
    pub(crate) slot: Slot,
    pub(crate) handshake: OwnedSemaphorePermit,
}

impl Admission {
    /// `max_connections` slots and `max_handshakes` concurrent handshakes (each at least 1).
    pub(crate) fn new(max_connections: u32, max_handshakes: u32, metrics: Arc<BrokerMetrics>) -> Admission {
        let max_handshakes = max_handshakes.max(1) as usize;
        Admission {
            slots: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            max_handshakes,
            metrics,
        }
    }

    /// Decides about `incoming` and acts: a Retry or a refusal consumes it; an accepted
    /// connection comes back with its permits.
    pub(crate) fn admit(&self, incoming: quinn::Incoming) -> Option<(quinn::Incoming, Admitted)> {
        let remote = incoming.remote_address();
        let in_progress = self.max_handshakes - self.handshakes.available_permits();
        let decision = decide(
            incoming.remote_address_validated(),
            incoming.may_retry(),
            in_progress,
            self.max_handshakes,
            self.slots.available_permits(),
        );
        let (slot, handshake) = match decision {
            Decision::Retry => {
                inc(&self.metrics.handshakes_retried);
                tracing::debug!(%remote, in_progress, "under load: asking the peer to validate its address (Retry)");
                // Fails only when a Retry was already sent, which `may_retry` ruled out.
                let _ = incoming.retry();
                return None;
            }
            Decision::Accept => (self.slots.clone().try_acquire_owned(), self.handshakes.clone().try_acquire_owned()),
            Decision::RefuseConnections | Decision::RefuseHandshakes => {
                return self.refuse(incoming, decision);
            }
        };
        // Only this task takes permits, so what `decide` saw is still free.
        let (Ok(slot), Ok(handshake)) = (slot, handshake) else {
            return self.refuse(incoming, Decision::RefuseConnections);
        };
        inc(&self.metrics.connections_open);
        Some((incoming, Admitted { slot: Slot { _permit: slot, metrics: self.metrics.clone() }, handshake }))
    }

    fn refuse(&self, incoming: quinn::Incoming, why: Decision) -> Option<(quinn::Incoming, Admitted)> {
        let remote = incoming.remote_address();
        if why == Decision::RefuseHandshakes {
            inc(&self.metrics.handshakes_refused);
            tracing::warn!(%remote, max = self.max_handshakes, "handshake budget used up; refusing");
        } else {
            inc(&self.metrics.connections_refused);
            tracing::warn!(%remote, "connection limit reached; refusing");
        }
        incoming.refuse();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_under_load_refuse_when_full_accept_otherwise() {
        use Decision::*;
        // Quiet: everyone is taken on at once, validated or not.
        assert_eq!(decide(false, true, 0, 8, 10), Accept);
        assert_eq!(decide(false, true, 3, 8, 10), Accept);
        // Half the handshake budget in use: unvalidated peers are asked to validate.
        assert_eq!(decide(false, true, 4, 8, 10), Retry);
        assert_eq!(decide(true, false, 4, 8, 10), Accept);
        // A peer that already had its Retry (but is not validated) is not retried again.
        assert_eq!(decide(false, false, 4, 8, 10), Accept);
        // Budgets used up.
        assert_eq!(decide(true, false, 8, 8, 10), RefuseHandshakes);
        assert_eq!(decide(false, true, 8, 8, 10), Retry);
        assert_eq!(decide(true, false, 0, 8, 0), RefuseConnections);
    }
}
