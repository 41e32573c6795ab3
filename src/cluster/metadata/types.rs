//! The values stored under the metadata keys (JSON), and the versioned wrapper that
//! compare-and-swap writes need.

use serde::{Deserialize, Serialize};

use crate::cluster::store::Revision;

/// A value read from the store with the revision it was last written at: the `expected`
/// revision of a later compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its modification revision.
    pub mod_revision: Revision,
}

/// What a live broker registers (`brokers/<id>`, under its session lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Broker id, unique in the cluster.
    pub id: u32,
    /// Host clients and other brokers connect to.
    pub host: String,
    /// UDP port of the broker's QUIC listener.
    pub port: u16,
    /// Random id of the broker's data directory: a registration left by an earlier run of
    /// the same broker (same directory, which only one process can hold) is recognised
    /// and replaced at once instead of being refused as a duplicate.
    pub instance: String,
}

impl BrokerRegistration {
    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A topic's settings (`topics/<name>`). Written by whichever broker handles
/// `CreateTopic`; the controller then assigns its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    /// Partition count; only ever raised.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// In-sync replicas an acks=all produce needs, and below which the high watermark
    /// stops (KIP-966).
    pub min_insync_replicas: u16,
}

/// A partition's replication state (`partitions/<topic>/<index>`), changed only by
/// compare-and-swap: by the controller (creation, leader election, removing dead brokers
/// from the in-sync set) and by the partition's leader (shrinking and expanding the
/// in-sync set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Broker ids holding a replica, in preference order. Fixed at assignment.
    pub replicas: Vec<u32>,
    /// The leader, or `None` while no in-sync replica is alive.
    pub leader: Option<u32>,
    /// Bumped on every change of leader (including to none). Batches appended by a leader
    /// carry its epoch; replication requests carry it for fencing.
    pub leader_epoch: i32,
    /// The in-sync replicas (always including the leader when there is one).
    pub isr: Vec<u32>,
    /// The create revision of the leader's broker registration when it was elected: a
    /// leader that restarted (a new registration) is not the leader any more, even when
    /// the controller never saw it gone, and is elected again with a new epoch.
    pub leader_session: Revision,
    /// Bumped on every change (Kafka's partition epoch), for logs and ordering.
    pub partition_epoch: i32,
}

impl PartitionState {
    /// Whether `broker` is in the in-sync set.
    pub fn in_isr(&self, broker: u32) -> bool {
        self.isr.contains(&broker)
    }
}

/// A live broker as the cluster view sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBroker {
    /// What it registered.
    pub registration: BrokerRegistration,
    /// The create revision of its registration key: identifies this run of the broker.
    pub session: Revision,
    /// The lease it registered under.
    pub lease: crate::cluster::store::LeaseId,
}
