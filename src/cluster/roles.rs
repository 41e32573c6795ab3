//! What this broker is for each partition, read from the cluster view: leader, follower of
//! another broker, or neither (a replica waiting for an election). Pure.
//!
//! A broker leads a partition only when the state names it **with its current session**:
//! after a restart it never serves under the epoch its previous run was elected in, even
//! before the controller has re-elected it (CLUSTER.md, "sessions").

use std::collections::BTreeMap;

use super::metadata::{ClusterView, PartitionState};
use super::store::Revision;
use crate::protocol::cluster::NotLeader;
use crate::protocol::ErrorCode;

/// This broker's part in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Lead at `epoch`.
    Leader {
        /// The leader epoch to serve.
        epoch: i32,
    },
    /// Follow `leader` (reachable at `address`, when registered) at `epoch`.
    Follower {
        /// The leader's broker id.
        leader: u32,
        /// The leader epoch to send.
        epoch: i32,
        /// `host:port` of the leader, `None` while it is not registered.
        address: Option<String>,
    },
    /// A replica with no usable leader now (none elected, or the state names this broker
    /// from an earlier session): serve nothing, wait for the controller.
    Waiting {
        /// The epoch of the state.
        epoch: i32,
    },
}

/// A partition's identity.
pub type PartitionKey = (String, u32);

/// The role of `me` (in session `session`) for one partition state.
pub fn role_of(view: &ClusterView, me: u32, session: Revision, st: &PartitionState) -> Option<Role> {
    if !st.replicas.contains(&me) {
        return None;
    }
    Some(match st.leader {
        Some(l) if l == me && st.leader_session == session => Role::Leader { epoch: st.leader_epoch },
        Some(l) if l == me => Role::Waiting { epoch: st.leader_epoch },
        Some(l) => Role::Follower {
            leader: l,
            epoch: st.leader_epoch,
            address: view.brokers.get(&l).map(|b| b.registration.address()),
        },
        None => Role::Waiting { epoch: st.leader_epoch },
    })
}

/// Every partition this broker holds a replica of, with its role.
pub fn roles(view: &ClusterView, me: u32, session: Revision) -> BTreeMap<PartitionKey, Role> {
    let mut out = BTreeMap::new();
    for (topic, parts) in &view.partitions {
        for (&p, st) in parts {
            if let Some(r) = role_of(view, me, session, &st.value) {
                out.insert((topic.clone(), p), r);
            }
        }
    }
    out
}

/// The `NotLeader` answer for a partition request that reached a broker which does not
/// lead the partition: names the leader and its address when the view knows them.
pub fn not_leader(view: &ClusterView, topic: &str, partition: u32, error: ErrorCode) -> NotLeader {
    let st = view.partition(topic, partition).map(|v| &v.value);
    let leader = st.and_then(|s| s.leader);
    let reg = leader.and_then(|l| view.brokers.get(&l)).map(|b| &b.registration);
    NotLeader {
        error,
        topic: topic.to_owned(),
        partition,
        leader: match (leader, reg) {
            (Some(l), Some(_)) => l as i32,
            _ => -1,
        },
        leader_epoch: st.map_or(-1, |s| s.leader_epoch),
        host: reg.map(|r| r.host.clone()).unwrap_or_default(),
        port: reg.map_or(0, |r| r.port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::{BrokerRegistration, LiveBroker, Versioned};

    fn view() -> ClusterView {
        let mut v = ClusterView::default();
        for (id, session) in [(1u32, 11i64), (2, 12)] {
            let registration =
                BrokerRegistration { id, host: format!("h{id}"), port: 7000 + id as u16, instance: String::new() };
            v.brokers.insert(id, LiveBroker { registration, session, lease: 0 });
        }
        let st = |leader: Option<u32>, session: i64| PartitionState {
            replicas: vec![1, 2, 3],
            leader,
            leader_epoch: 4,
            isr: vec![1, 2],
            leader_session: session,
            partition_epoch: 0,
        };
        let parts = v.partitions.entry("t".into()).or_default();
        parts.insert(0, Versioned { value: st(Some(1), 11), mod_revision: 1 });
        parts.insert(1, Versioned { value: st(Some(2), 12), mod_revision: 1 });
        parts.insert(2, Versioned { value: st(None, 0), mod_revision: 1 });
        parts.insert(3, Versioned { value: st(Some(1), 5), mod_revision: 1 });
        parts.insert(4, Versioned { value: st(Some(3), 13), mod_revision: 1 });
        v
    }

    #[test]
    fn roles_follow_the_view_and_the_session() {
        let v = view();
        let r = roles(&v, 1, 11);
        assert_eq!(r[&("t".into(), 0)], Role::Leader { epoch: 4 });
        assert_eq!(r[&("t".into(), 1)], Role::Follower { leader: 2, epoch: 4, address: Some("h2:7002".into()) });
        assert_eq!(r[&("t".into(), 2)], Role::Waiting { epoch: 4 });
        // Elected in an earlier session: not the leader any more.
        assert_eq!(r[&("t".into(), 3)], Role::Waiting { epoch: 4 });
        // Leader 3 is not registered: follow it without an address until it is.
        assert_eq!(r[&("t".into(), 4)], Role::Follower { leader: 3, epoch: 4, address: None });
        // Broker 9 holds no replica.
        assert!(roles(&v, 9, 1).is_empty());
    }

    #[test]
    fn not_leader_names_the_leader_when_known() {
        let v = view();
        let n = not_leader(&v, "t", 1, ErrorCode::NotLeader);
        assert_eq!((n.leader, n.leader_epoch, n.host.as_str(), n.port), (2, 4, "h2", 7002));
        let none = not_leader(&v, "t", 2, ErrorCode::NotLeader);
        assert_eq!((none.leader, none.host.as_str(), none.port), (-1, "", 0));
        let gone = not_leader(&v, "t", 4, ErrorCode::NotLeader);
        assert_eq!(gone.leader, -1, "a leader that is not registered cannot be reached");
        let unknown = not_leader(&v, "nope", 0, ErrorCode::NotLeader);
        assert_eq!((unknown.leader, unknown.leader_epoch), (-1, -1));
    }
}
