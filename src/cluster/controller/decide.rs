//! The controller's decisions, as a pure function of the cluster view.
//!
//! Given every live broker, topic spec and partition state, [`decide`] returns the
//! partition writes that bring the metadata in line with reality:
//!
//! - a topic's partitions that have no state yet get replicas (see [`super::assign`]), the
//!   first replica as leader at epoch 0, and every replica in sync (their logs are empty);
//! - a partition whose leader is not alive — not registered, or registered by a later run
//!   than the one it was elected in — gets a new leader **from the in-sync set only**, in
//!   replica preference order, with the epoch bumped and the dead members dropped from the
//!   in-sync set; with no live in-sync replica it has no leader (epoch bumped, in-sync set
//!   kept so that any of its members can be elected when it returns), unless unclean
//!   election is switched on, which elects any live replica and warns;
//! - a partition whose leader is alive but whose in-sync set names dead brokers has them
//!   removed (the leader epoch stays).
//!
//! Every write carries the partition's mod revision it was decided on: when the state
//! changed meanwhile, the write fails and the next round decides again on fresh state.

use crate::cluster::metadata::{ClusterView, PartitionState, PartitionWrite, TopicSpec};

use super::assign::assign_replicas;

/// Controller settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControllerConfig {
    /// Elect a replica that is not in sync when no in-sync replica is alive. Off by
    /// default: such a leader lacks acknowledged records, which are then lost.
    pub unclean_leader_election: bool,
}

/// Why a write was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A new partition was assigned.
    Created,
    /// A new leader was elected from the in-sync set.
    LeaderElected {
        /// The previous leader, if any.
        previous: Option<u32>,
    },
    /// The leader is gone and no in-sync replica is alive.
    NoLeader {
        /// The leader that was lost.
        previous: u32,
    },
    /// A replica outside the in-sync set was elected (unclean election).
    UncleanElection {
        /// The previous leader, if any.
        previous: Option<u32>,
    },
    /// Dead brokers were removed from the in-sync set.
    IsrShrunk {
        /// The removed brokers.
        removed: Vec<u32>,
    },
}

/// A write and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to write.
    pub write: PartitionWrite,
    /// Why.
    pub reason: Reason,
}

/// Every write the view calls for.
pub fn decide(view: &ClusterView, config: &ControllerConfig) -> Vec<Decision> {
    let mut out = Vec::new();
    let live: Vec<u32> = view.brokers.keys().copied().collect();
    for (topic, spec) in &view.topics {
        let existing = view.partitions.get(topic);
        let missing: Vec<u32> =
            (0..spec.value.partitions).filter(|p| existing.is_none_or(|e| !e.contains_key(p))).collect();
        if !missing.is_empty() {
            out.extend(create(view, topic, &spec.value, &missing, &live));
        }
        for (&partition, state) in existing.into_iter().flatten() {
            if let Some((new, reason)) = decide_partition(view, &state.value, config) {
                let write =
                    PartitionWrite { topic: topic.clone(), partition, expected: Some(state.mod_revision), state: new };
                out.push(Decision { write, reason });
            }
        }
    }
    out
}

fn create(view: &ClusterView, topic: &str, spec: &TopicSpec, missing: &[u32], live: &[u32]) -> Vec<Decision> {
    let rf = usize::from(spec.replication_factor);
    if rf == 0 || live.len() < rf {
        tracing::warn!(
            topic,
            replication_factor = rf,
            live_brokers = live.len(),
            "cannot assign new partitions yet: fewer live brokers than the replication factor"
        );
        return Vec::new();
    }
    assign_replicas(topic, missing, rf, live)
        .into_iter()
        .zip(missing)
        .map(|(replicas, &partition)| {
            let leader = replicas[0];
            let state = PartitionState {
                leader: Some(leader),
                leader_epoch: 0,
                isr: replicas.clone(),
                leader_session: view.brokers[&leader].session,
                partition_epoch: 0,
                replicas,
            };
            let write = PartitionWrite { topic: topic.to_owned(), partition, expected: None, state };
            Decision { write, reason: Reason::Created }
        })
        .collect()
}

/// The change one partition needs, if any.
pub fn decide_partition(
    view: &ClusterView,
    st: &PartitionState,
    config: &ControllerConfig,
) -> Option<(PartitionState, Reason)> {
    let live = |b: &u32| view.brokers.contains_key(b);
    let leader_alive = st.leader.is_some_and(|l| view.is_live_session(l, st.leader_session));
    let next = |leader: Option<u32>, isr: Vec<u32>, bump_leader_epoch: bool| PartitionState {
        replicas: st.replicas.clone(),
        leader,
        leader_epoch: if bump_leader_epoch { st.leader_epoch.wrapping_add(1) } else { st.leader_epoch },
        isr,
        leader_session: leader.and_then(|l| view.brokers.get(&l)).map_or(0, |b| b.session),
        partition_epoch: st.partition_epoch.wrapping_add(1),
    };
    if leader_alive {
        let removed: Vec<u32> = st.isr.iter().copied().filter(|b| !live(b)).collect();
        if removed.is_empty() {
            return None;
        }
        let isr = st.isr.iter().copied().filter(live).collect();
        return Some((next(st.leader, isr, false), Reason::IsrShrunk { removed }));
    }
    let candidate = st.replicas.iter().copied().find(|r| st.isr.contains(r) && live(r));
    if let Some(new) = candidate {
        let isr = st.isr.iter().copied().filter(live).collect();
        return Some((next(Some(new), isr, true), Reason::LeaderElected { previous: st.leader }));
    }
    if config.unclean_leader_election {
        if let Some(new) = st.replicas.iter().copied().find(live) {
            tracing::warn!(leader = new, previous = ?st.leader,
                "unclean leader election: the new leader was not in sync; acknowledged records may be lost");
            return Some((next(Some(new), vec![new], true), Reason::UncleanElection { previous: st.leader }));
        }
    }
    let previous = st.leader?;
    Some((next(None, st.isr.clone(), true), Reason::NoLeader { previous }))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
