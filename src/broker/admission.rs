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
//! - A connection without a certificate (client auth `optional`) holds a permit of the
//!   unauthenticated budget ([`PendingAuth`]) from its handshake until it authenticates
//!   with SASL: at most `max_unauthenticated` such connections at once, and at most
//!   `max_unauthenticated_per_source` from one address (IPv6: one /64), so peers that
//!   complete TLS without a certificate and never authenticate cannot take every slot.
//!
//! [`BrokerConfig::max_connections`]: super::BrokerConfig::max_connections
//! [`BrokerConfig::max_handshakes`]: super::BrokerConfig::max_handshakes
//! [`BrokerConfig::handshake_timeout_ms`]: super::BrokerConfig::handshake_timeout_ms

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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

/// The budget of connections that have not authenticated yet: a global count and a count
/// per source address.
#[derive(Debug)]
pub(crate) struct PendingAuth {
    global: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, u32>>>,
    per_source_max: u32,
}

/// A place in the unauthenticated budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct PendingPermit {
    _global: OwnedSemaphorePermit,
    per_source: Arc<Mutex<HashMap<IpAddr, u32>>>,
    source: IpAddr,
}

impl Drop for PendingPermit {
    fn drop(&mut self) {
        let mut counts = self.per_source.lock().expect("pending-auth lock");
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

impl PendingAuth {
    /// At most `max` unauthenticated connections, `per_source_max` per address (each at
    /// least 1).
    pub(crate) fn new(max: u32, per_source_max: u32) -> PendingAuth {
        PendingAuth {
            global: Arc::new(Semaphore::new(max.max(1) as usize)),
            per_source: Arc::default(),
            per_source_max: per_source_max.max(1),
        }
    }

    /// A place for a connection from `ip`, or which bound refused it.
    pub(crate) fn try_take(&self, ip: IpAddr) -> Result<PendingPermit, &'static str> {
        let source = crate::auth::server::limiter::key(ip);
        let mut counts = self.per_source.lock().expect("pending-auth lock");
        let n = counts.entry(source).or_insert(0);
        if *n >= self.per_source_max {
            if *n == 0 {
                counts.remove(&source);
            }
            return Err("too many connections from this address have not authenticated yet");
        }
        let Ok(global) = self.global.clone().try_acquire_owned() else {
            if *n == 0 {
                counts.remove(&source);
            }
            return Err("too many connections have not authenticated yet");
        };
        *n += 1;
        Ok(PendingPermit { _global: global, per_source: self.per_source.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_are_bounded_per_source_and_overall() {
        let p = PendingAuth::new(5, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let (a1, a2) = (p.try_take(a).unwrap(), p.try_take(a).unwrap());
        assert!(p.try_take(a).unwrap_err().contains("from this address"));
        // The same host as an IPv4-mapped address, and another /64 host.
        assert!(p.try_take("::ffff:192.0.2.1".parse().unwrap()).is_err());
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let b1 = p.try_take(v6("2001:db8:1:2::1")).unwrap();
        let b2 = p.try_take(v6("2001:db8:1:2::ffff")).unwrap();
        assert!(p.try_take(v6("2001:db8:1:2::7")).is_err(), "same /64");
        let c = p.try_take(v6("2001:db8:9::1")).unwrap();
        assert!(p.try_take(v6("2001:db8:8::1")).unwrap_err().contains("too many connections have"));
        // Given back when dropped (authenticated or closed).
        drop(a1);
        let a3 = p.try_take(a).unwrap();
        drop((a2, a3, b1, b2, c));
        assert!(p.per_source.lock().unwrap().is_empty());
        assert_eq!(p.global.available_permits(), 5);
    }

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
