//! The cluster view: every broker, the controller, every topic and partition state, as of
//! one store revision; built from a listing and kept current by a watch.
//!
//! [`ClusterView::apply`] is pure (a listing or watch events in, a new view out), so the
//! controller and the brokers reason about plain values. [`spawn_view_watcher`] is the
//! thin shell: list, watch from the next revision, apply, publish; on any watch failure
//! mark the view stale, back off, and list again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::keys::{KeyKind, Keys};
use super::types::{BrokerRegistration, LiveBroker, PartitionState, TopicSpec, Versioned};
use crate::cluster::store::{KeyValue, MetaStore, Revision, WatchEvent};

/// A controller candidate (one key of the election).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    create_revision: Revision,
    broker: Option<u32>,
}

/// Everything the cluster's metadata says, as of [`ClusterView::revision`].
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The store revision this view reflects.
    pub revision: Revision,
    /// Live (registered) brokers by id.
    pub brokers: BTreeMap<u32, LiveBroker>,
    /// Topic specs by name.
    pub topics: BTreeMap<String, Versioned<TopicSpec>>,
    /// Partition states by topic, then index.
    pub partitions: BTreeMap<String, BTreeMap<u32, Versioned<PartitionState>>>,
    candidates: BTreeMap<String, Candidate>,
    /// Since when the view may be behind the store (the watch failed and a new listing
    /// has not succeeded yet); `None` while current.
    pub stale_since: Option<Instant>,
}

impl ClusterView {
    /// The broker leading the controller election, if any.
    pub fn controller(&self) -> Option<u32> {
        self.candidates.values().min_by_key(|c| c.create_revision).and_then(|c| c.broker)
    }

    /// A partition's state.
    pub fn partition(&self, topic: &str, index: u32) -> Option<&Versioned<PartitionState>> {
        self.partitions.get(topic)?.get(&index)
    }

    /// Whether `broker` is registered with exactly this session.
    pub fn is_live_session(&self, broker: u32, session: Revision) -> bool {
        self.brokers.get(&broker).is_some_and(|b| b.session == session)
    }

    /// A view of a listing taken at `revision`.
    pub fn from_listing(keys: &Keys, kvs: &[KeyValue], revision: Revision) -> ClusterView {
        let mut view = ClusterView { revision, ..ClusterView::default() };
        for kv in kvs {
            view.put(keys, kv);
        }
        view
    }

    /// Applies watch events (in revision order).
    pub fn apply(&mut self, keys: &Keys, events: &[WatchEvent]) {
        for ev in events {
            match ev {
                WatchEvent::Put(kv) => self.put(keys, kv),
                WatchEvent::Delete { key, .. } => self.delete(keys, key),
            }
            self.revision = self.revision.max(ev.revision());
        }
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        let bad = |what: &str, e: serde_json::Error| {
            tracing::warn!(key = %kv.key, error = %e, "ignoring a {what} that does not parse");
        };
        match keys.parse(&kv.key) {
            Some(KeyKind::Broker(id)) => match serde_json::from_slice::<BrokerRegistration>(&kv.value) {
                Ok(registration) if registration.id == id => {
                    let b = LiveBroker { registration, session: kv.create_revision, lease: kv.lease };
                    self.brokers.insert(id, b);
                }
                Ok(r) => tracing::warn!(key = %kv.key, id = r.id, "ignoring a registration under another id's key"),
                Err(e) => bad("broker registration", e),
            },
            Some(KeyKind::ControllerCandidate) => {
                let broker = std::str::from_utf8(&kv.value).ok().and_then(|s| s.trim().parse().ok());
                self.candidates.insert(kv.key.clone(), Candidate { create_revision: kv.create_revision, broker });
            }
            Some(KeyKind::Topic(t)) => match serde_json::from_slice::<TopicSpec>(&kv.value) {
                Ok(spec) => {
                    self.topics.insert(t.to_owned(), Versioned { value: spec, mod_revision: kv.mod_revision });
                }
                Err(e) => bad("topic spec", e),
            },
            Some(KeyKind::Partition(t, p)) => match serde_json::from_slice::<PartitionState>(&kv.value) {
                Ok(state) => {
                    let v = Versioned { value: state, mod_revision: kv.mod_revision };
                    self.partitions.entry(t.to_owned()).or_default().insert(p, v);
                }
                Err(e) => bad("partition state", e),
            },
            Some(KeyKind::Other) | None => {}
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        match keys.parse(key) {
            Some(KeyKind::Broker(id)) => {
                self.brokers.remove(&id);
            }
            Some(KeyKind::ControllerCandidate) => {
                self.candidates.remove(key);
            }
            Some(KeyKind::Topic(t)) => {
                self.topics.remove(t);
            }
            Some(KeyKind::Partition(t, p)) => {
                if let Some(parts) = self.partitions.get_mut(t) {
                    parts.remove(&p);
                    if parts.is_empty() {
                        self.partitions.remove(t);
                    }
                }
            }
            Some(KeyKind::Other) | None => {}
        }
    }
}

/// Starts a task that keeps a [`ClusterView`] current and publishes each new one. The
/// first value is an empty, stale view until the first listing succeeds. The task ends
/// when every receiver is dropped.
pub fn spawn_view_watcher(store: Arc<dyn MetaStore>, keys: Keys) -> watch::Receiver<Arc<ClusterView>> {
    let initial = ClusterView { stale_since: Some(Instant::now()), ..ClusterView::default() };
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let root = keys.root();
        loop {
            let listed = store.list(&root).await;
            let mut view = match listed {
                Ok((kvs, rev)) => ClusterView::from_listing(&keys, &kvs, rev),
                Err(e) => {
                    tracing::warn!(store = %store.describe(), error = %e, "listing cluster metadata failed; retrying");
                    if wait_or_closed(&tx, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            let mut events = match store.watch(&root, view.revision + 1).await {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::warn!(store = %store.describe(), error = %e, "watching cluster metadata failed; retrying");
                    if wait_or_closed(&tx, backoff).await {
                        return;
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            if tx.send(Arc::new(view.clone())).is_err() {
                return;
            }
            loop {
                let batch = tokio::select! {
                    b = events.recv() => b,
                    _ = tx.closed() => return,
                };
                match batch {
                    Some(Ok(evs)) => {
                        view.apply(&keys, &evs);
                        if tx.send(Arc::new(view.clone())).is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(store = %store.describe(), error = %e, "cluster metadata watch ended");
                        break;
                    }
                    None => break,
                }
            }
            view.stale_since = Some(Instant::now());
            if tx.send(Arc::new(view)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Sleeps `d`; true when every receiver is gone (stop).
async fn wait_or_closed(tx: &watch::Sender<Arc<ClusterView>>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = tx.closed() => true,
    }
}
