//! The typed metadata layer: brokers, the controller, topics, partition states, producer-id
//! blocks and a generic namespace, written through any [`MetaStore`].
//!
//! Every write here is one transaction, and every write that decides something is fenced:
//!
//! | write | condition |
//! |---|---|
//! | register a broker | its key is absent (a duplicate id is refused) |
//! | controller: create, elect, shrink | the controller's election key still has the create revision it won with, **and** the partition's mod revision is the one the decision was made on |
//! | leader: shrink/expand the in-sync set, or give the leadership up | the leader's registration still has its session's create revision, **and** the partition's mod revision is unchanged |
//! | create a topic | its key is absent |
//! | add partitions | the topic's mod revision is unchanged |
//! | producer-id block | the counter's mod revision is unchanged |

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub mod keys;
pub mod kv;
pub mod session;
pub mod types;
pub mod view;

pub use keys::Keys;
pub use kv::KvNamespace;
pub use session::{Session, SessionStatus};
pub use types::{BrokerRegistration, LiveBroker, PartitionState, TopicSpec, Versioned};
pub use view::{spawn_view_watcher, ClusterView};

use crate::cluster::store::{Compare, LeaderKey, MetaStore, Revision, StoreError, Txn};

/// Why a metadata operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The store failed (see [`StoreError::outcome_unknown`] for writes).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another live broker is registered with this id.
    #[error("broker id {id} is already registered by a live broker at {address} (another process runs with this id)")]
    DuplicateBroker {
        /// The id.
        id: u32,
        /// The address the other broker registered.
        address: String,
    },
    /// The topic exists.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The topic does not exist.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// A topic can only gain partitions.
    #[error("topic '{topic}' has {current} partitions; it can only grow (asked for {requested})")]
    PartitionsCannotShrink {
        /// The topic.
        topic: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
    /// This process is no longer the controller: its write was refused.
    #[error("not the controller any more (its election key is gone or was replaced)")]
    NotController,
    /// The broker's session ended: its write was refused.
    #[error("the broker's session has ended (its registration is gone)")]
    SessionLost,
    /// The state changed since it was read: read again and decide again.
    #[error("{key} changed since it was read (compare-and-swap lost)")]
    Conflict {
        /// The key.
        key: String,
    },
    /// A stored value does not parse.
    #[error("{key} holds a value that does not parse: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parser's message.
        detail: String,
    },
    /// The election could not be won before the session ended.
    #[error("campaign for controller ended: {0}")]
    CampaignEnded(String),
}

/// Proof of being the controller: the election key this process won with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerLease {
    /// The winning candidacy.
    pub leader: LeaderKey,
    /// This broker's id.
    pub broker: u32,
}

/// A partition state write the controller decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionWrite {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The mod revision the decision was based on; `None` to create the key.
    pub expected: Option<Revision>,
    /// The new state.
    pub state: PartitionState,
}

/// The typed metadata API over a store and a key prefix.
#[derive(Debug, Clone)]
pub struct Metadata {
    store: Arc<dyn MetaStore>,
    keys: Keys,
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("metadata values serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(bytes).map_err(|e| MetaError::Corrupt { key: key.to_owned(), detail: e.to_string() })
}

impl Metadata {
    /// Metadata under `prefix` in `store`.
    pub fn new(store: Arc<dyn MetaStore>, prefix: &str) -> Metadata {
        Metadata { store, keys: Keys::new(prefix) }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Registers a broker under a new lease of `ttl` and keeps the lease alive. A live
    /// registration of the same id by another data directory is refused
    /// ([`MetaError::DuplicateBroker`]); one left by an earlier run of this broker (same
    /// `instance`) is revoked and replaced.
    pub async fn register(&self, registration: BrokerRegistration, ttl: Duration) -> Result<Session, MetaError> {
        let key = self.keys.broker(registration.id);
        let granted_at = Instant::now();
        let lease = self.store.grant_lease(ttl).await?;
        let value = to_json(&registration);
        for _ in 0..3 {
            let txn = Txn::new().when(Compare::Absent(key.clone())).put_leased(key.clone(), value.clone(), lease);
            let outcome = match self.store.txn(txn).await {
                Ok(o) => o,
                Err(e) => {
                    let _ = self.store.revoke_lease(lease).await;
                    return Err(e.into());
                }
            };
            if outcome.succeeded {
                let session =
                    Session::start(self.store.clone(), lease, ttl, granted_at, key, outcome.revision, registration);
                return Ok(session);
            }
            let Some(existing) = self.store.get(&key).await? else { continue };
            let other: Result<BrokerRegistration, _> = from_json(&key, &existing.value);
            match other {
                Ok(other) if other.instance == registration.instance => {
                    tracing::info!(
                        id = registration.id,
                        "replacing the registration left by this broker's previous run"
                    );
                    self.store.revoke_lease(existing.lease).await?;
                }
                Ok(other) => {
                    let _ = self.store.revoke_lease(lease).await;
                    return Err(MetaError::DuplicateBroker { id: registration.id, address: other.address() });
                }
                Err(e) => {
                    let _ = self.store.revoke_lease(lease).await;
                    return Err(e);
                }
            }
        }
        let _ = self.store.revoke_lease(lease).await;
        Err(MetaError::Conflict { key })
    }

    /// Campaigns for controller with the session's lease; returns once elected. Fails when
    /// the session ends first.
    pub async fn campaign(&self, session: &Session) -> Result<ControllerLease, MetaError> {
        let broker = session.registration().id;
        let mut status = session.subscribe();
        let name = self.keys.controller_election();
        let value = broker.to_string();
        let campaign = self.store.campaign(&name, value.as_bytes(), session.lease());
        tokio::pin!(campaign);
        loop {
            if let SessionStatus::Lost { reason } = &*status.borrow_and_update() {
                return Err(MetaError::CampaignEnded(reason.clone()));
            }
            tokio::select! {
                won = &mut campaign => return Ok(ControllerLease { leader: won?, broker }),
                changed = status.changed() => {
                    if changed.is_err() {
                        return Err(MetaError::CampaignEnded("session dropped".into()));
                    }
                }
            }
        }
    }

    /// The current controller's broker id.
    pub async fn controller(&self) -> Result<Option<u32>, MetaError> {
        let leader = self.store.election_leader(&self.keys.controller_election()).await?;
        Ok(leader.and_then(|(_, v)| std::str::from_utf8(&v).ok()?.trim().parse().ok()))
    }

    /// Whether `lease` still holds the controller election.
    pub async fn is_controller(&self, lease: &ControllerLease) -> Result<bool, MetaError> {
        let leader = self.store.election_leader(&lease.leader.name).await?;
        Ok(leader.is_some_and(|(k, _)| k == lease.leader))
    }

    /// Gives up the controller role (its session continues).
    pub async fn resign(&self, lease: &ControllerLease) -> Result<(), MetaError> {
        Ok(self.store.resign(&lease.leader).await?)
    }

    /// Registered brokers.
    pub async fn brokers(&self) -> Result<Vec<LiveBroker>, MetaError> {
        let (kvs, rev) = self.store.list(&self.keys.brokers()).await?;
        Ok(ClusterView::from_listing(&self.keys, &kvs, rev).brokers.into_values().collect())
    }

    /// Everything, read at one revision.
    pub async fn snapshot(&self) -> Result<ClusterView, MetaError> {
        let (kvs, rev) = self.store.list(&self.keys.root()).await?;
        Ok(ClusterView::from_listing(&self.keys, &kvs, rev))
    }

    /// Creates a topic's spec; the controller then assigns its partitions.
    pub async fn create_topic(&self, topic: &str, spec: TopicSpec) -> Result<Revision, MetaError> {
        let key = self.keys.topic(topic);
        let outcome = self.store.txn(Txn::new().when(Compare::Absent(key.clone())).put(key, to_json(&spec))).await?;
        if outcome.succeeded {
            Ok(outcome.revision)
        } else {
            Err(MetaError::TopicExists(topic.to_owned()))
        }
    }

    /// A topic's spec.
    pub async fn topic(&self, topic: &str) -> Result<Option<Versioned<TopicSpec>>, MetaError> {
        let key = self.keys.topic(topic);
        match self.store.get(&key).await? {
            Some(kv) => Ok(Some(Versioned { value: from_json(&key, &kv.value)?, mod_revision: kv.mod_revision })),
            None => Ok(None),
        }
    }

    /// Raises a topic's partition count to `partitions` (the controller assigns the new
    /// ones). Asking for the current count is a no-op.
    pub async fn add_partitions(&self, topic: &str, partitions: u32) -> Result<(), MetaError> {
        let key = self.keys.topic(topic);
        loop {
            let current = self.topic(topic).await?.ok_or_else(|| MetaError::UnknownTopic(topic.to_owned()))?;
            if partitions < current.value.partitions {
                return Err(MetaError::PartitionsCannotShrink {
                    topic: topic.to_owned(),
                    current: current.value.partitions,
                    requested: partitions,
                });
            }
            if partitions == current.value.partitions {
                return Ok(());
            }
            let spec = TopicSpec { partitions, ..current.value };
            let txn = Txn::new()
                .when(Compare::ModRevision(key.clone(), current.mod_revision))
                .put(key.clone(), to_json(&spec));
            if self.store.txn(txn).await?.succeeded {
                return Ok(());
            }
        }
    }

    /// A topic's partition states, by index.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<(u32, Versioned<PartitionState>)>, MetaError> {
        let (kvs, rev) = self.store.list(&self.keys.partitions_of(topic)).await?;
        let view = ClusterView::from_listing(&self.keys, &kvs, rev);
        Ok(view.partitions.get(topic).map(|p| p.clone().into_iter().collect()).unwrap_or_default())
    }

    /// Applies one controller decision, fenced by the controller's leadership and by the
    /// partition's revision. [`MetaError::NotController`] when deposed,
    /// [`MetaError::Conflict`] when the partition changed meanwhile.
    pub async fn write_partition(&self, ctl: &ControllerLease, w: &PartitionWrite) -> Result<Revision, MetaError> {
        let key = self.keys.partition(&w.topic, w.partition);
        let cas = match w.expected {
            Some(rev) => Compare::ModRevision(key.clone(), rev),
            None => Compare::Absent(key.clone()),
        };
        let txn = Txn::new().when(ctl.leader.guard()).when(cas).put(key.clone(), to_json(&w.state));
        let outcome = self.store.txn(txn).await?;
        if outcome.succeeded {
            return Ok(outcome.revision);
        }
        if self.is_controller(ctl).await? {
            Err(MetaError::Conflict { key })
        } else {
            Err(MetaError::NotController)
        }
    }

    /// The leader's change of a partition's in-sync set, fenced by the leader's session and
    /// the partition's revision. The state must still name this broker as leader at the
    /// same epoch.
    pub async fn write_isr(
        &self,
        session: &Session,
        topic: &str,
        partition: u32,
        current: &Versioned<PartitionState>,
        isr: Vec<u32>,
    ) -> Result<Versioned<PartitionState>, MetaError> {
        let state = PartitionState {
            isr,
            partition_epoch: current.value.partition_epoch.wrapping_add(1),
            ..current.value.clone()
        };
        let key = self.keys.partition(topic, partition);
        if let Some(written) = self.put_as_leader(session, &key, current, state).await? {
            return Ok(written);
        }
        let reg = self.store.get(&self.keys.broker(session.registration().id)).await?;
        if reg.is_some_and(|kv| kv.create_revision == session.revision()) {
            Err(MetaError::Conflict { key })
        } else {
            Err(MetaError::SessionLost)
        }
    }

    /// The leader gives up a partition it can no longer serve in its epoch (its log was
    /// cut in place after a failed fsync, so appending again in the same epoch would let
    /// replicas diverge unnoticed): no leader, the epoch bumped, the in-sync set kept; the
    /// controller then elects again (possibly this broker, at a new epoch). Fenced like
    /// [`Metadata::write_isr`].
    pub async fn abdicate(
        &self,
        session: &Session,
        topic: &str,
        partition: u32,
        current: &Versioned<PartitionState>,
    ) -> Result<Versioned<PartitionState>, MetaError> {
        let state = PartitionState {
            leader: None,
            leader_epoch: current.value.leader_epoch.wrapping_add(1),
            leader_session: 0,
            partition_epoch: current.value.partition_epoch.wrapping_add(1),
            ..current.value.clone()
        };
        let key = self.keys.partition(topic, partition);
        match self.put_as_leader(session, &key, current, state).await? {
            Some(written) => Ok(written),
            None => Err(MetaError::Conflict { key }),
        }
    }

    /// Writes `state` over `current` at `key` if `current` names this session's broker as
    /// leader, the session is alive and `key` was not changed since `current` was read
    /// (one transaction). `Ok(None)`: the transaction's guard failed; `Conflict`: `current`
    /// does not name this broker.
    async fn put_as_leader(
        &self,
        session: &Session,
        key: &str,
        current: &Versioned<PartitionState>,
        state: PartitionState,
    ) -> Result<Option<Versioned<PartitionState>>, MetaError> {
        if current.value.leader != Some(session.registration().id) {
            return Err(MetaError::Conflict { key: key.to_owned() });
        }
        let txn = Txn::new()
            .when(session.guard())
            .when(Compare::ModRevision(key.to_owned(), current.mod_revision))
            .put(key.to_owned(), to_json(&state));
        let outcome = self.store.txn(txn).await?;
        Ok(outcome.succeeded.then_some(Versioned { value: state, mod_revision: outcome.revision }))
    }

    /// Reserves `count` producer ids, unique across every broker of the cluster. A write
    /// whose outcome is unknown is never reused: the next attempt reads the counter again,
    /// so at worst a block is skipped.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<std::ops::Range<i64>, MetaError> {
        let key = self.keys.producer_ids();
        let count = count.max(1);
        loop {
            let (start, cas) = match self.store.get(&key).await? {
                Some(kv) => {
                    let text = String::from_utf8_lossy(&kv.value).into_owned();
                    let start: i64 = text.trim().parse().map_err(|e: std::num::ParseIntError| MetaError::Corrupt {
                        key: key.clone(),
                        detail: e.to_string(),
                    })?;
                    (start, Compare::ModRevision(key.clone(), kv.mod_revision))
                }
                None => (0, Compare::Absent(key.clone())),
            };
            let end = start.checked_add(count).ok_or_else(|| MetaError::Corrupt {
                key: key.clone(),
                detail: format!("producer ids exhausted at {start}"),
            })?;
            let txn = Txn::new().when(cas).put(key.clone(), end.to_string());
            if self.store.txn(txn).await?.succeeded {
                return Ok(start..end);
            }
        }
    }

    /// A generic compare-and-swap namespace (`kv/<namespace>/`).
    pub fn kv(&self, namespace: &str) -> KvNamespace {
        KvNamespace::new(self.store.clone(), self.keys.kv(namespace))
    }
}
