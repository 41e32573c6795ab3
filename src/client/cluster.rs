//! Cluster administration requests on the plain client: describe the cluster and topics'
//! replicas, create replicated topics, add partitions (PROTOCOL.md §21).

use super::Client;
use crate::protocol::cluster::{
    AlterPartitions, ClusterPayload, CreateReplicatedTopic, DescribeClusterOk, DescribeTopics, TopicReplicas,
};
use crate::protocol::{FrameKind, Payload};
use crate::transport::connection::expect_kind;
use crate::transport::TransportError;

impl Client {
    async fn cluster_call(&mut self, p: ClusterPayload, want: FrameKind) -> Result<ClusterPayload, TransportError> {
        let addr = self.conn.addr();
        let answer = self.conn.control().call(Payload::Cluster(p)).await?;
        expect_kind(addr, &answer, want)?;
        let Payload::Cluster(c) = answer else { unreachable!("kind checked") };
        Ok(c)
    }

    /// The controller and the brokers.
    pub async fn describe_cluster(&mut self) -> Result<DescribeClusterOk, TransportError> {
        match self.cluster_call(ClusterPayload::DescribeCluster, FrameKind::DescribeClusterOk).await? {
            ClusterPayload::DescribeClusterOk(d) => Ok(d),
            _ => unreachable!("kind checked"),
        }
    }

    /// Replicas, leaders and in-sync sets of the named topics (all visible when empty).
    pub async fn describe_topics(&mut self, topics: &[&str]) -> Result<Vec<TopicReplicas>, TransportError> {
        let req = DescribeTopics { topics: topics.iter().map(|t| t.to_string()).collect() };
        match self.cluster_call(ClusterPayload::DescribeTopics(req), FrameKind::DescribeTopicsOk).await? {
            ClusterPayload::DescribeTopicsOk(d) => Ok(d.topics),
            _ => unreachable!("kind checked"),
        }
    }

    /// Creates a topic with a replication factor and a minimum in-sync set; returns what
    /// the broker created.
    pub async fn create_replicated_topic(
        &mut self,
        topic: &str,
        partitions: u32,
        replication_factor: u16,
        min_insync_replicas: u16,
    ) -> Result<CreateReplicatedTopic, TransportError> {
        let req = CreateReplicatedTopic { topic: topic.into(), partitions, replication_factor, min_insync_replicas };
        match self.cluster_call(ClusterPayload::CreateReplicatedTopic(req), FrameKind::CreateReplicatedTopicOk).await? {
            ClusterPayload::CreateReplicatedTopicOk(c) => Ok(c),
            _ => unreachable!("kind checked"),
        }
    }

    /// Raises a topic's partition count; returns the count now in force.
    pub async fn alter_partitions(&mut self, topic: &str, partitions: u32) -> Result<u32, TransportError> {
        let req = AlterPartitions { topic: topic.into(), partitions };
        match self.cluster_call(ClusterPayload::AlterPartitions(req), FrameKind::AlterPartitionsOk).await? {
            ClusterPayload::AlterPartitionsOk(a) => Ok(a.partitions),
            _ => unreachable!("kind checked"),
        }
    }
}
