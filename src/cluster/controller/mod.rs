//! The controller: one broker at a time, elected through the metadata store, turns the
//! cluster view into partition writes.
//!
//! - [`decide`](mod@decide): the decisions, a pure function of the view (unit-tested);
//! - [`assign`]: replica assignment for new partitions;
//! - [`run_controller`]: the thin async shell — campaign, then on every view change write
//!   what [`decide::decide`] asks for, each write fenced by the controller's election key;
//!   when a write is refused because this broker is no longer the controller, or its
//!   session ends, stop acting and campaign again.

pub mod assign;
pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use decide::{decide, ControllerConfig, Decision, Reason};

use super::metadata::{ClusterView, MetaError, Metadata, Session, SessionStatus};

/// Runs the controller loop for `session`'s broker until `shutdown` turns true or the
/// session ends. While another broker is the controller this only waits in the election.
pub async fn run_controller(
    meta: Metadata,
    session: Arc<Session>,
    mut view: watch::Receiver<Arc<ClusterView>>,
    config: ControllerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = session.registration().id;
    loop {
        if *shutdown.borrow() || matches!(session.status(), SessionStatus::Lost { .. }) {
            return;
        }
        let lease = tokio::select! {
            r = meta.campaign(&session) => r,
            _ = shutdown.changed() => continue,
        };
        let lease = match lease {
            Ok(l) => l,
            Err(MetaError::CampaignEnded(reason)) => {
                tracing::warn!(broker = me, %reason, "controller campaign ended with the session");
                return;
            }
            Err(e) => {
                tracing::warn!(broker = me, error = %e, "controller campaign failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        tracing::info!(broker = me, "elected controller");
        // Do not act on a view older than the election: wait until it has seen the win.
        let mut wait_for = lease.leader.create_revision;
        loop {
            if *shutdown.borrow() {
                let _ = meta.resign(&lease).await;
                return;
            }
            if !session.holds_at(tokio::time::Instant::now()) {
                tracing::warn!(broker = me, "session no longer certain; stepping down as controller");
                break;
            }
            let current = view.borrow_and_update().clone();
            if current.stale_since.is_none() && current.revision >= wait_for {
                match act(&meta, &lease, &current, &config).await {
                    Ok(Some(rev)) => wait_for = rev,
                    Ok(None) => {}
                    Err(()) => break,
                }
            }
            tokio::select! {
                _ = view.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// One round: decide and write. `Ok(Some(rev))` after writes (the view must reach `rev`
/// before the next round), `Err(())` when this broker is no longer the controller.
async fn act(
    meta: &Metadata,
    lease: &super::metadata::ControllerLease,
    view: &ClusterView,
    config: &ControllerConfig,
) -> Result<Option<i64>, ()> {
    let mut last = None;
    for d in decide(view, config) {
        let w = &d.write;
        match meta.write_partition(lease, w).await {
            Ok(rev) => {
                tracing::info!(topic = %w.topic, partition = w.partition, reason = ?d.reason,
                    leader = ?w.state.leader, leader_epoch = w.state.leader_epoch, isr = ?w.state.isr,
                    "partition state written");
                last = Some(rev);
            }
            Err(MetaError::Conflict { .. }) => {
                tracing::debug!(topic = %w.topic, partition = w.partition, "partition changed meanwhile; deciding again");
            }
            Err(MetaError::NotController) => {
                tracing::warn!(broker = lease.broker, "no longer the controller: write refused");
                return Err(());
            }
            Err(e) => {
                // The outcome may be unknown: the next round decides again on the view,
                // which by then shows the write if it was applied.
                tracing::warn!(topic = %w.topic, partition = w.partition, error = %e, "partition write failed");
                return Ok(last);
            }
        }
    }
    Ok(last)
}
