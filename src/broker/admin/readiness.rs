//! Readiness: a named set of conditions, each set by the part of the broker that owns it.
//! `GET /ready` answers 200 only when every registered condition is met.
//!
//! The broker start-up registers [`STORAGE_RECOVERED`] and [`ACCEPTING_CONNECTIONS`];
//! a cluster broker adds [`CLUSTER_VIEW_CURRENT`]; other parts add their own with
//! [`Readiness::condition`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Condition: the data directory has been recovered (logs scanned, torn tails truncated,
/// producer state rebuilt).
pub const STORAGE_RECOVERED: &str = "storage_recovered";
/// Condition: the QUIC endpoint is bound and accepting connections (false again once
/// shutdown begins).
pub const ACCEPTING_CONNECTIONS: &str = "accepting_connections";
/// Condition (cluster mode only): the broker has a current view of the cluster — its
/// watch of the metadata store is live, its session holds, and the view lists it under
/// that session. False while it starts, while etcd is unreachable, and after a lost
/// session until it has registered again.
pub const CLUSTER_VIEW_CURRENT: &str = "cluster_view_current";

/// The set of readiness conditions. Cheap to clone; clones share the set.
#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("report", &self.report()).finish()
    }
}

/// One readiness condition, held by the code that knows whether it is met. Starts unmet.
#[derive(Clone, Debug)]
pub struct Condition {
    name: Arc<str>,
    met: Arc<AtomicBool>,
}

impl Condition {
    /// Marks the condition met (`true`) or not (`false`).
    pub fn set(&self, met: bool) {
        self.met.store(met, Ordering::Release);
    }

    /// Whether the condition is met.
    pub fn is_met(&self) -> bool {
        self.met.load(Ordering::Acquire)
    }

    /// The condition's name, as `/ready` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What `GET /ready` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// Every condition is met (and at least one is registered).
    pub ready: bool,
    /// Each condition by name.
    pub conditions: BTreeMap<String, bool>,
}

impl Readiness {
    /// An empty set (reports not ready until a condition is registered and met).
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Registers a condition, unmet, and returns its handle. Registering a name again
    /// returns a handle to the same condition.
    pub fn condition(&self, name: &str) -> Condition {
        let mut map = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        let met = map.entry(name.to_owned()).or_default().clone();
        Condition { name: Arc::from(name), met }
    }

    /// The current state of every condition.
    pub fn report(&self) -> ReadinessReport {
        let map = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
        let conditions: BTreeMap<String, bool> =
            map.iter().map(|(k, v)| (k.clone(), v.load(Ordering::Acquire))).collect();
        ReadinessReport { ready: !conditions.is_empty() && conditions.values().all(|m| *m), conditions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_met() {
        let r = Readiness::new();
        assert!(!r.report().ready, "no condition registered is not ready");
        let a = r.condition("a");
        let b = r.condition("b");
        assert!(!r.report().ready);
        a.set(true);
        assert_eq!(r.report().conditions, BTreeMap::from([("a".into(), true), ("b".into(), false)]));
        assert!(!r.report().ready);
        b.set(true);
        assert!(r.report().ready);
        // The same name is the same condition; a later registration can revoke readiness.
        r.condition("a").set(false);
        assert!(!a.is_met());
        assert!(!r.report().ready);
        a.set(true);
        let _c = r.clone().condition("c");
        assert!(!r.report().ready, "a condition added later starts unmet");
    }
}
