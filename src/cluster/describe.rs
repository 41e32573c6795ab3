//! Answers to `DescribeCluster` and `DescribeTopics`, built from the cluster view. Pure.

use std::collections::BTreeSet;

use super::metadata::ClusterView;
use crate::protocol::cluster::{ClusterBroker, DescribeClusterOk, PartitionReplicas, TopicReplicas};
use crate::protocol::ErrorCode;

/// The controller, every registered broker, and every broker named as a replica that is
/// not registered (`alive = false`), by id.
pub fn describe_cluster(view: &ClusterView) -> DescribeClusterOk {
    let mut ids: BTreeSet<u32> = view.brokers.keys().copied().collect();
    for parts in view.partitions.values() {
        for st in parts.values() {
            ids.extend(st.value.replicas.iter().copied());
        }
    }
    let brokers = ids
        .into_iter()
        .map(|id| match view.brokers.get(&id) {
            Some(b) => ClusterBroker { id, host: b.registration.host.clone(), port: b.registration.port, alive: true },
            None => ClusterBroker { id, host: String::new(), port: 0, alive: false },
        })
        .collect();
    DescribeClusterOk { controller: view.controller().map_or(-1, |c| c as i32), brokers }
}

/// One topic's replication state; `UNKNOWN_TOPIC_OR_PARTITION` when the view has no spec.
/// Partitions the controller has not assigned yet are left out.
pub fn describe_topic(view: &ClusterView, topic: &str) -> TopicReplicas {
    let Some(spec) = view.topics.get(topic) else {
        return TopicReplicas {
            name: topic.to_owned(),
            error: ErrorCode::UnknownTopicOrPartition,
            replication_factor: 0,
            min_insync_replicas: 0,
            partitions: Vec::new(),
        };
    };
    let partitions = view
        .partitions
        .get(topic)
        .into_iter()
        .flatten()
        .filter(|(p, _)| **p < spec.value.partitions)
        .map(|(&partition, st)| PartitionReplicas {
            partition,
            leader: st.value.leader.map_or(-1, |l| l as i32),
            leader_epoch: st.value.leader_epoch,
            replicas: st.value.replicas.clone(),
            isr: st.value.isr.clone(),
        })
        .collect();
    TopicReplicas {
        name: topic.to_owned(),
        error: ErrorCode::None,
        replication_factor: spec.value.replication_factor,
        min_insync_replicas: spec.value.min_insync_replicas,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::{BrokerRegistration, LiveBroker, PartitionState, TopicSpec, Versioned};

    #[test]
    fn cluster_and_topics_described_from_the_view() {
        let mut v = ClusterView::default();
        let registration = BrokerRegistration { id: 2, host: "h".into(), port: 9, instance: String::new() };
        v.brokers.insert(2, LiveBroker { registration, session: 1, lease: 0 });
        let spec = TopicSpec { partitions: 2, replication_factor: 2, min_insync_replicas: 1 };
        v.topics.insert("t".into(), Versioned { value: spec, mod_revision: 1 });
        let st = PartitionState {
            replicas: vec![2, 5],
            leader: Some(2),
            leader_epoch: 3,
            isr: vec![2],
            leader_session: 1,
            partition_epoch: 0,
        };
        v.partitions.entry("t".into()).or_default().insert(0, Versioned { value: st, mod_revision: 2 });
        let c = describe_cluster(&v);
        assert_eq!(c.controller, -1);
        assert_eq!(
            c.brokers,
            vec![
                ClusterBroker { id: 2, host: "h".into(), port: 9, alive: true },
                ClusterBroker { id: 5, host: String::new(), port: 0, alive: false }
            ]
        );
        let t = describe_topic(&v, "t");
        assert_eq!((t.error, t.replication_factor, t.partitions.len()), (ErrorCode::None, 2, 1));
        assert_eq!(
            t.partitions[0],
            PartitionReplicas { partition: 0, leader: 2, leader_epoch: 3, replicas: vec![2, 5], isr: vec![2] }
        );
        assert_eq!(describe_topic(&v, "x").error, ErrorCode::UnknownTopicOrPartition);
    }
}
