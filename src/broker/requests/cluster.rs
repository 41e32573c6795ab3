//! Cluster frames (PROTOCOL.md §21): a follower's `ReplicaFetch` and
//! `OffsetForLeaderEpoch` (leader side), `DescribeCluster`, `DescribeTopics`,
//! `CreateReplicatedTopic`, `AlterPartitions`; and the `NotLeader` answer shared with
//! produce and fetch. On a single broker the administration frames describe that broker
//! (replication factor 1) and replication frames are refused.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{denied, error, frame};
use crate::broker::acl::Permission;
use crate::broker::cluster::replica::Replica;
use crate::broker::cluster::NodeInner;
use crate::broker::context::ConnCtx;
use crate::broker::log::LogError;
use crate::broker::topics::Topic;
use crate::broker::writer::Pending;
use crate::cluster::describe::{describe_cluster, describe_topic};
use crate::cluster::metadata::TopicSpec;
use crate::cluster::replica_set::FetchRefused;
use crate::cluster::roles::not_leader;
use crate::protocol::cluster::{
    AlterPartitions, ClusterBroker, ClusterPayload, CreateReplicatedTopic, DescribeClusterOk, DescribeTopics,
    DescribeTopicsOk, OffsetForLeaderEpoch, OffsetForLeaderEpochOk, PartitionReplicas, ReplicaFetch, ReplicaFetchOk,
    TopicReplicas,
};
use crate::protocol::{ErrorCode, Frame, Payload};

/// Acts on one cluster request.
pub(super) async fn dispatch(ctx: &ConnCtx, corr: u32, p: ClusterPayload) -> Option<Pending> {
    match p {
        ClusterPayload::ReplicaFetch(r) => replica_fetch(ctx, corr, r).await,
        ClusterPayload::OffsetForLeaderEpoch(r) => offset_for_leader_epoch(ctx, corr, r),
        ClusterPayload::DescribeCluster | ClusterPayload::DescribeTopics(_) if view_is_stale(ctx) => error(
            corr,
            ErrorCode::MetadataUnavailable,
            "this broker cannot reach the metadata store: its view of the cluster may be out of date; ask another broker",
        ),
        ClusterPayload::DescribeCluster => Some(Pending::Ready(cluster_frame(corr, describe(ctx)))),
        ClusterPayload::DescribeTopics(d) => describe_topics(ctx, corr, d),
        ClusterPayload::CreateReplicatedTopic(c) => create(ctx, corr, c).await,
        ClusterPayload::AlterPartitions(a) => alter(ctx, corr, a).await,
        other => {
            error(corr, ErrorCode::InvalidRequest, format!("{:?} is a response kind, not a request", other.kind()))
        }
    }
}

fn view_is_stale(ctx: &ConnCtx) -> bool {
    ctx.shared.cluster.as_ref().is_some_and(|n| n.view().stale_since.is_some())
}

fn cluster_frame(correlation_id: u32, p: ClusterPayload) -> Frame {
    Frame { correlation_id, payload: Payload::Cluster(p) }
}

/// The `NotLeader` answer for a partition this broker does not lead.
pub(super) fn not_leader_frame(node: &NodeInner, corr: u32, topic: &str, partition: u32, code: ErrorCode) -> Frame {
    cluster_frame(corr, ClusterPayload::NotLeader(not_leader(&node.view(), topic, partition, code)))
}

/// The replica of a partition this broker leads right now (its session holds), or the
/// `NotLeader` answer.
pub(super) fn leading(node: &NodeInner, corr: u32, topic: &str, partition: u32) -> Result<(Arc<Replica>, i32), Frame> {
    let refuse = || not_leader_frame(node, corr, topic, partition, ErrorCode::NotLeader);
    let replica = node.replica(topic, partition).ok_or_else(refuse)?;
    match replica.leader_epoch() {
        Some(epoch) if node.session_holds() => Ok((replica, epoch)),
        _ => Err(refuse()),
    }
}

/// Fencing of a replication request: its epoch must be this leader's.
fn fenced(node: &NodeInner, corr: u32, topic: &str, partition: u32, theirs: i32, mine: i32) -> Option<Frame> {
    let code = match theirs.cmp(&mine) {
        std::cmp::Ordering::Equal => return None,
        std::cmp::Ordering::Less => ErrorCode::FencedLeaderEpoch,
        std::cmp::Ordering::Greater => ErrorCode::UnknownLeaderEpoch,
    };
    Some(not_leader_frame(node, corr, topic, partition, code))
}

/// What both replication requests check first: the `cluster` permission, cluster mode, this
/// broker leading the partition, and the follower's view of the leader epoch. The node, the
/// replica and its epoch, or (boxed: the refusal path is cold) the answer to give.
fn led_for_replica<'a>(
    ctx: &'a ConnCtx,
    corr: u32,
    topic: &str,
    partition: u32,
    their_epoch: i32,
) -> Result<Led<'a>, Box<Option<Pending>>> {
    if !ctx.shared.acl.allows(&ctx.principal, topic, Permission::Cluster) {
        return Err(Box::new(denied(ctx, corr, topic, Permission::Cluster)));
    }
    let Some(node) = ctx.shared.cluster.as_ref() else { return Err(Box::new(not_a_cluster(corr))) };
    let refuse = |f| Box::new(Some(Pending::Ready(f)));
    let (replica, epoch) = leading(node, corr, topic, partition).map_err(refuse)?;
    if let Some(f) = fenced(node, corr, topic, partition, their_epoch, epoch) {
        return Err(refuse(f));
    }
    Ok(Led { node, replica, epoch })
}

/// A partition this broker leads, for a replication request.
struct Led<'a> {
    node: &'a Arc<NodeInner>,
    replica: Arc<Replica>,
    epoch: i32,
}

fn not_a_cluster(corr: u32) -> Option<Pending> {
    error(corr, ErrorCode::InvalidRequest, "this broker is not part of a cluster (started without --metadata)")
}

async fn replica_fetch(ctx: &ConnCtx, corr: u32, r: ReplicaFetch) -> Option<Pending> {
    let Led { node, replica, epoch } = match led_for_replica(ctx, corr, &r.topic, r.partition, r.leader_epoch) {
        Ok(led) => led,
        Err(answer) => return *answer,
    };
    let log_start = replica.partition.metadata(0).log_start_offset;
    if r.fetch_offset < log_start {
        return error(
            corr,
            ErrorCode::OffsetOutOfRange,
            format!("fetch offset {} is below the leader's log start {log_start}", r.fetch_offset),
        );
    }
    match replica.on_fetch(r.replica_id, r.fetch_offset, r.durable_offset) {
        Ok(_) => {}
        Err(FetchRefused::NotReplica(id)) => {
            return error(
                corr,
                ErrorCode::InvalidRequest,
                format!("broker {id} holds no replica of {}-{}", r.topic, r.partition),
            )
        }
        Err(e @ FetchRefused::PastEnd { .. }) => return error(corr, ErrorCode::OffsetOutOfRange, e.to_string()),
    }
    let limit = ctx.shared.config.batch_limit() as usize;
    let max_bytes = (r.max_bytes as usize).clamp(1, limit);
    let max_wait = Duration::from_millis(u64::from(r.max_wait_ms.min(30_000)));
    let node = node.clone();
    Some(Pending::Later(Box::pin(async move {
        replica.wait_for_data(r.fetch_offset, max_wait).await;
        let answer = async {
            let Some(epoch) = replica.leader_epoch().filter(|e| *e == epoch) else {
                return Err(not_leader_frame(&node, corr, &r.topic, r.partition, ErrorCode::NotLeader));
            };
            let fetched = replica.partition.read_for_replica(r.fetch_offset, max_bytes).await.map_err(|e| {
                let code = match e {
                    LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                    LogError::Corrupt { .. } => ErrorCode::CorruptStoredData,
                    _ => ErrorCode::StorageError,
                };
                error_frame(corr, code, e.to_string())
            })?;
            let records = replica
                .with_epochs(fetched.batches)
                .map_err(|e| error_frame(corr, ErrorCode::CorruptStoredData, e.to_string()))?;
            Ok(ReplicaFetchOk {
                leader_epoch: epoch,
                high_watermark: replica.high_watermark(),
                log_start_offset: fetched.log_start_offset,
                log_end_offset: fetched.high_watermark,
                records,
            })
        };
        match answer.await {
            Ok(ok) => cluster_frame(corr, ClusterPayload::ReplicaFetchOk(ok)),
            Err(f) => f,
        }
    })))
}

fn error_frame(correlation_id: u32, code: ErrorCode, message: String) -> Frame {
    Frame { correlation_id, payload: Payload::Error(crate::protocol::frame::ErrorFrame { code, message }) }
}

fn offset_for_leader_epoch(ctx: &ConnCtx, corr: u32, r: OffsetForLeaderEpoch) -> Option<Pending> {
    let replica = match led_for_replica(ctx, corr, &r.topic, r.partition, r.current_leader_epoch) {
        Ok(led) => led.replica,
        Err(answer) => return *answer,
    };
    let (leader_epoch, end_offset) = replica.end_offset_for(r.epoch);
    tracing::debug!(topic = %r.topic, partition = r.partition, follower = r.replica_id, asked = r.epoch,
        leader_epoch, end_offset, "epoch end offset asked");
    Some(Pending::Ready(cluster_frame(
        corr,
        ClusterPayload::OffsetForLeaderEpochOk(OffsetForLeaderEpochOk { leader_epoch, end_offset }),
    )))
}

/// The cluster as seen by this broker (a single broker: itself).
fn describe(ctx: &ConnCtx) -> ClusterPayload {
    let shared = &ctx.shared;
    let d = match &shared.cluster {
        Some(node) => describe_cluster(&node.view()),
        None => DescribeClusterOk {
            controller: shared.config.broker_id as i32,
            brokers: vec![ClusterBroker {
                id: shared.config.broker_id,
                host: shared.config.advertised_host.clone().unwrap_or_else(|| shared.local_addr.ip().to_string()),
                port: shared.local_addr.port(),
                alive: true,
            }],
        },
    };
    ClusterPayload::DescribeClusterOk(d)
}

fn single_topic(ctx: &ConnCtx, t: &Topic) -> TopicReplicas {
    let me = ctx.shared.config.broker_id;
    TopicReplicas {
        name: t.name.to_string(),
        error: ErrorCode::None,
        replication_factor: 1,
        min_insync_replicas: 1,
        partitions: (0..t.partitions.len() as u32)
            .map(|partition| PartitionReplicas {
                partition,
                leader: me as i32,
                leader_epoch: 0,
                replicas: vec![me],
                isr: vec![me],
            })
            .collect(),
    }
}

fn describe_topics(ctx: &ConnCtx, corr: u32, d: DescribeTopics) -> Option<Pending> {
    let shared = &ctx.shared;
    let visible = |name: &str| shared.acl.sees(&ctx.principal, name);
    let failed = |name: &str, error| TopicReplicas {
        name: name.to_owned(),
        error,
        replication_factor: 0,
        min_insync_replicas: 0,
        partitions: vec![],
    };
    let topics = match &shared.cluster {
        Some(node) => {
            let view = node.view();
            let names: Vec<String> = if d.topics.is_empty() {
                view.topics.keys().filter(|n| visible(n)).cloned().collect()
            } else {
                d.topics
            };
            names
                .iter()
                .map(|n| if visible(n) { describe_topic(&view, n) } else { failed(n, ErrorCode::AuthorizationFailed) })
                .collect()
        }
        None => {
            if d.topics.is_empty() {
                shared.registry.list().iter().filter(|t| visible(&t.name)).map(|t| single_topic(ctx, t)).collect()
            } else {
                d.topics
                    .iter()
                    .map(|n| match shared.registry.get(n) {
                        _ if !visible(n) => failed(n, ErrorCode::AuthorizationFailed),
                        Some(t) => single_topic(ctx, &t),
                        None => failed(n, ErrorCode::UnknownTopicOrPartition),
                    })
                    .collect()
            }
        }
    };
    Some(Pending::Ready(cluster_frame(corr, ClusterPayload::DescribeTopicsOk(DescribeTopicsOk { topics }))))
}

async fn create(ctx: &ConnCtx, corr: u32, c: CreateReplicatedTopic) -> Option<Pending> {
    let shared = &ctx.shared;
    if !shared.acl.allows(&ctx.principal, &c.topic, Permission::Admin) {
        return denied(ctx, corr, &c.topic, Permission::Admin);
    }
    let spec = TopicSpec {
        partitions: c.partitions,
        replication_factor: c.replication_factor,
        min_insync_replicas: c.min_insync_replicas,
    };
    let created = match &shared.cluster {
        Some(node) => node.create_topic(&shared.registry, &c.topic, spec, shared.config.max_partitions).await,
        None if c.replication_factor != 1 || c.min_insync_replicas != 1 => {
            return error(
                corr,
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "a single broker holds one replica: replication factor and min in-sync replicas must be 1, got {} and {}",
                    c.replication_factor, c.min_insync_replicas
                ),
            )
        }
        None => shared.create_topic(&c.topic, c.partitions).await,
    };
    match created {
        Ok(t) => frame(
            corr,
            Payload::Cluster(ClusterPayload::CreateReplicatedTopicOk(CreateReplicatedTopic {
                topic: t.name.to_string(),
                partitions: t.partitions.len() as u32,
                ..c
            })),
        ),
        Err(e) => error(corr, e.code, e.message),
    }
}

async fn alter(ctx: &ConnCtx, corr: u32, a: AlterPartitions) -> Option<Pending> {
    let shared = &ctx.shared;
    if !shared.acl.allows(&ctx.principal, &a.topic, Permission::Admin) {
        return denied(ctx, corr, &a.topic, Permission::Admin);
    }
    let altered = match &shared.cluster {
        Some(node) => node.add_partitions(&shared.registry, &a.topic, a.partitions, shared.config.max_partitions).await,
        None => {
            let Some(t) = shared.registry.get(&a.topic) else {
                return error(corr, ErrorCode::UnknownTopicOrPartition, format!("topic '{}' does not exist", a.topic));
            };
            if (a.partitions as usize) < t.partitions.len() {
                return error(
                    corr,
                    ErrorCode::InvalidPartitions,
                    format!("topic '{}' has {} partitions; it can only grow", a.topic, t.partitions.len()),
                );
            }
            let (reg, name, n) = (shared.registry.clone(), a.topic.clone(), a.partitions);
            tokio::task::spawn_blocking(move || reg.ensure(&name, n)).await.unwrap_or_else(|e| {
                Err(crate::broker::topics::TopicError { code: ErrorCode::Unknown, message: e.to_string() })
            })
        }
    };
    match altered {
        Ok(t) => frame(
            corr,
            Payload::Cluster(ClusterPayload::AlterPartitionsOk(AlterPartitions {
                topic: t.name.to_string(),
                partitions: t.partitions.len() as u32,
            })),
        ),
        Err(e) => error(corr, e.code, e.message),
    }
}

/// Keeps the batches of `data` that end at or below `hw` (batches never straddle it:
/// the high watermark is always a batch boundary).
pub(super) fn trim_to(data: Bytes, hw: i64) -> Bytes {
    let mut pos = 0;
    while pos + 23 <= data.len() {
        let base = i64::from_be_bytes(data[pos..pos + 8].try_into().expect("8 bytes"));
        let len = 12 + u32::from_be_bytes(data[pos + 8..pos + 12].try_into().expect("4 bytes")) as usize;
        let delta = u32::from_be_bytes(data[pos + 19..pos + 23].try_into().expect("4 bytes")) as i64;
        if base + delta >= hw || pos + len > data.len() {
            break;
        }
        pos += len;
    }
    data.slice(..pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BatchBuilder, Compression, ProducerStamp, Record};

    #[test]
    fn trim_keeps_whole_batches_below_the_high_watermark() {
        let mut all = Vec::new();
        let mut base = 10i64;
        for n in [2u32, 3, 1] {
            let mut b = BatchBuilder::new();
            for _ in 0..n {
                b.push(&Record { timestamp: 0, key: None, value: Some(Bytes::from_static(b"x")), headers: vec![] });
            }
            let mut bytes = b.seal(Compression::None, None, ProducerStamp::NONE).to_vec();
            bytes[0..8].copy_from_slice(&base.to_be_bytes());
            base += i64::from(n);
            all.extend(bytes);
        }
        let data = Bytes::from(all);
        let count = |b: &Bytes| crate::protocol::RecordBatch::split_all(b.clone()).unwrap().len();
        assert_eq!(count(&trim_to(data.clone(), 16)), 3);
        assert_eq!(count(&trim_to(data.clone(), 15)), 2);
        assert_eq!(count(&trim_to(data.clone(), 12)), 1);
        assert_eq!(trim_to(data.clone(), 11).len(), 0, "a batch ending past the HW is not served");
        assert_eq!(trim_to(data, 10).len(), 0);
    }
}
