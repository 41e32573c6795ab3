//! A broker's session: its registration under a lease, kept alive about every TTL/3.
//!
//! The session knows, by its own clock, until when its lease certainly holds: each
//! renewal's answer counts from the moment the request was *sent*, which is earlier than
//! the moment etcd renewed it, so the local estimate expires first. A leader serves only
//! while that estimate holds (CLUSTER.md, "etcd unreachable").

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::types::BrokerRegistration;
use crate::cluster::store::{Compare, LeaseId, MetaStore, Revision, StoreError};

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// The lease holds at least until `valid_until`.
    Alive {
        /// The local, conservative expiry estimate.
        valid_until: Instant,
    },
    /// The lease has ended (expired, revoked, or not renewed in time): the registration is
    /// gone or about to be, and nothing may be done on its authority any more.
    Lost {
        /// Why.
        reason: String,
    },
}

/// A registered broker's live session. Dropping it stops the keep-alives (the lease then
/// expires after its TTL); [`Session::close`] ends it at once.
#[derive(Debug)]
pub struct Session {
    store: Arc<dyn MetaStore>,
    lease: LeaseId,
    key: String,
    revision: Revision,
    registration: BrokerRegistration,
    status: watch::Receiver<SessionStatus>,
    keeper: JoinHandle<()>,
}

impl Session {
    pub(super) fn start(
        store: Arc<dyn MetaStore>,
        lease: LeaseId,
        ttl: Duration,
        granted_at: Instant,
        key: String,
        revision: Revision,
        registration: BrokerRegistration,
    ) -> Session {
        let (tx, status) = watch::channel(SessionStatus::Alive { valid_until: granted_at + ttl });
        let keeper = tokio::spawn(keep_alive(store.clone(), lease, ttl, granted_at + ttl, tx));
        Session { store, lease, key, revision, registration, status, keeper }
    }

    /// The lease id.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The create revision of the registration key: identifies this run of the broker.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// What was registered.
    pub fn registration(&self) -> &BrokerRegistration {
        &self.registration
    }

    /// The condition that fences a write on this session: the registration key still
    /// exists with this session's create revision.
    pub fn guard(&self) -> Compare {
        Compare::CreateRevision(self.key.clone(), self.revision)
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Whether the lease certainly holds at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        matches!(*self.status.borrow(), SessionStatus::Alive { valid_until } if valid_until > now)
    }

    /// Ends the session now: stops the keep-alives and revokes the lease, which deletes
    /// the registration (and any candidacy under the same lease).
    pub async fn close(self) -> Result<(), StoreError> {
        self.keeper.abort();
        self.store.revoke_lease(self.lease).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn keep_alive(
    store: Arc<dyn MetaStore>,
    lease: LeaseId,
    ttl: Duration,
    mut valid_until: Instant,
    tx: watch::Sender<SessionStatus>,
) {
    let period = ttl / 3;
    let retry = (ttl / 10).max(Duration::from_millis(100));
    let mut next = Instant::now() + period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(valid_until)) => {}
            _ = tx.closed() => return,
        }
        let now = Instant::now();
        if now >= valid_until {
            let reason = format!("lease {lease:x} was not renewed within its {} ms TTL", ttl.as_millis());
            tracing::error!(store = %store.describe(), "{reason}");
            let _ = tx.send(SessionStatus::Lost { reason });
            return;
        }
        let sent = Instant::now();
        match tokio::time::timeout(valid_until - sent, store.keep_alive(lease)).await {
            Ok(Ok(left)) => {
                valid_until = sent + left.min(ttl);
                let _ = tx.send(SessionStatus::Alive { valid_until });
                next = sent + period;
            }
            Ok(Err(StoreError::LeaseExpired { .. })) => {
                let reason = format!("lease {lease:x} expired or was revoked");
                tracing::error!(store = %store.describe(), "{reason}");
                let _ = tx.send(SessionStatus::Lost { reason });
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(store = %store.describe(), error = %e, "lease keep-alive failed; retrying");
                next = Instant::now() + retry;
            }
            Err(_) => next = Instant::now(),
        }
    }
}
