//! Response budgets: the bytes of responses the broker holds for clients, bounded per
//! connection and broker-wide.
//!
//! A response that may be large (a fetch, a metadata listing) is charged before it is
//! built and stays charged until the stream's writer has handed its bytes to QUIC (whose
//! own send buffer is bounded by the connection's send window). A request whose charge
//! does not fit waits; the stream's reader waits with it, so QUIC flow control holds the
//! client back. A client that never reads its responses therefore holds at most its
//! connection's budget, and all clients together at most the broker's.
//!
//! The connection's budget is taken first: a connection waits on the broker-wide budget
//! only while holding no more than its own share, so one connection alone never exhausts
//! the broker's budget when the broker's budget is larger than a connection's.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::{inc, BrokerMetrics};

/// The broker-wide budget, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct BrokerBudget {
    permits: Arc<Semaphore>,
    size: usize,
    metrics: Arc<BrokerMetrics>,
}

impl BrokerBudget {
    /// A budget of `bytes` (at least 1).
    pub(crate) fn new(bytes: u64, metrics: Arc<BrokerMetrics>) -> BrokerBudget {
        let size = usize::try_from(bytes.max(1)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        BrokerBudget { permits: Arc::new(Semaphore::new(size)), size, metrics }
    }

    /// A connection's budget of `bytes`, drawing on this one.
    pub(crate) fn connection(&self, bytes: u64) -> ResponseBudget {
        let size = usize::try_from(bytes.max(1)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        ResponseBudget { conn: Arc::new(Semaphore::new(size)), conn_size: size, broker: self.clone() }
    }
}

/// One connection's response budget.
#[derive(Debug)]
pub(crate) struct ResponseBudget {
    conn: Arc<Semaphore>,
    conn_size: usize,
    broker: BrokerBudget,
}

/// Bytes charged to a connection's and the broker's budget; released when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    conn: OwnedSemaphorePermit,
    broker: OwnedSemaphorePermit,
    metrics: Arc<BrokerMetrics>,
}

impl ResponseBudget {
    /// The most one charge may hold: a larger response is charged this much (the whole
    /// budget), so it waits for every other response of the connection to be written.
    pub(crate) fn largest(&self) -> usize {
        self.conn_size.min(self.broker.size)
    }

    /// Charges `bytes` (capped at [`Self::largest`]), waiting until both budgets have room.
    pub(crate) async fn charge(&self, bytes: usize) -> Charge {
        let n = self.permits_for(bytes);
        if let Some(c) = self.try_charge(bytes) {
            return c;
        }
        inc(&self.broker.metrics.response_budget_waits);
        // Neither semaphore is ever closed.
        let conn = self.conn.clone().acquire_many_owned(n).await.expect("budget semaphore open");
        let broker = self.broker.permits.clone().acquire_many_owned(n).await.expect("budget semaphore open");
        self.charged(conn, broker)
    }

    /// Charges `bytes` (capped at [`Self::largest`]) if both budgets have room now.
    pub(crate) fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let n = self.permits_for(bytes);
        let conn = self.conn.clone().try_acquire_many_owned(n).ok()?;
        let broker = self.broker.permits.clone().try_acquire_many_owned(n).ok()?;
        Some(self.charged(conn, broker))
    }

    fn permits_for(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.largest())).unwrap_or(u32::MAX)
    }

    fn charged(&self, conn: OwnedSemaphorePermit, broker: OwnedSemaphorePermit) -> Charge {
        let m = &self.broker.metrics;
        let n = conn.num_permits() as u64;
        let now = m.response_bytes_queued.fetch_add(n, Relaxed) + n;
        m.response_bytes_queued_peak.fetch_max(now, Relaxed);
        Charge { conn, broker, metrics: m.clone() }
    }
}

impl Charge {
    /// Bytes charged.
    pub(crate) fn bytes(&self) -> usize {
        self.conn.num_permits()
    }

    /// Gives back everything above `bytes` (a response turned out smaller than charged).
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let extra = self.bytes().saturating_sub(bytes.max(1));
        if extra > 0 {
            drop(self.conn.split(extra));
            drop(self.broker.split(extra));
            self.metrics.response_bytes_queued.fetch_sub(extra as u64, Relaxed);
        }
    }

    /// Adds another charge to this one.
    pub(crate) fn merge(&mut self, mut other: Charge) {
        // Move the permits; `other`'s drop then releases nothing and uncounts nothing.
        let n = other.bytes();
        self.conn.merge(other.conn.split(n).expect("whole permit"));
        self.broker.merge(other.broker.split(n).expect("whole permit"));
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.metrics.response_bytes_queued.fetch_sub(self.conn.num_permits() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_wait_for_both_budgets_and_release_on_drop() {
        let metrics = Arc::new(BrokerMetrics::default());
        let broker = BrokerBudget::new(100, metrics.clone());
        let a = broker.connection(60);
        let b = broker.connection(60);
        let mut ca = a.charge(50).await;
        assert!(a.try_charge(20).is_none(), "the connection's budget is the limit");
        let cb = b.try_charge(40).expect("another connection has its own budget");
        assert!(b.try_charge(20).is_none(), "the broker's budget is the limit");
        assert_eq!(metrics.response_bytes_queued.load(Relaxed), 90);
        ca.shrink_to(10);
        assert_eq!(metrics.response_bytes_queued.load(Relaxed), 50);
        let more = a.try_charge(30).expect("room after shrinking");
        ca.merge(more);
        assert_eq!((ca.bytes(), metrics.response_bytes_queued.load(Relaxed)), (40, 80));
        // A charge larger than the budget takes the whole budget.
        let waiting = tokio::spawn(async move { a.charge(1000).await.bytes() });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(ca);
        drop(cb);
        assert_eq!(waiting.await.unwrap(), 60);
        assert_eq!(metrics.response_bytes_queued.load(Relaxed), 0);
        assert_eq!(metrics.response_bytes_queued_peak.load(Relaxed), 90);
        assert_eq!(metrics.response_budget_waits.load(Relaxed), 1);
    }
}
