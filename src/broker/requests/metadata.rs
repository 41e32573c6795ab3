//! `Metadata`: the broker and the topics a principal may see. A named topic that does not
//! exist is auto-created (when auto-create is on) if the principal may write it, at most
//! `max_auto_create_per_request` per request.

use crate::broker::acl::Permission;
use crate::broker::cluster::NodeInner;
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::topics::Topic;
use crate::cluster::metadata::ClusterView;
use crate::protocol::frame::{BrokerInfo, Metadata, MetadataOk, PartitionMetadata, TopicMetadata};
use crate::protocol::ErrorCode;

/// Describes the requested topics (all visible ones for an empty list).
pub(super) async fn metadata(ctx: &ConnCtx, m: Metadata) -> MetadataOk {
    if let Some(node) = &ctx.shared.cluster {
        return cluster_metadata(ctx, node, m).await;
    }
    let shared = &ctx.shared;
    let describe = |t: &Topic| TopicMetadata {
        name: t.name.to_string(),
        error: ErrorCode::None,
        partitions: t.partitions.iter().map(|p| p.metadata(shared.config.broker_id)).collect(),
    };
    let failed = |name: &str, error| TopicMetadata { name: name.to_owned(), error, partitions: vec![] };
    let topics = if m.topics.is_empty() {
        shared
            .registry
            .list()
            .iter()
            .filter(|t| shared.acl.sees(&ctx.principal, &t.name))
            .map(|t| describe(t))
            .collect()
    } else {
        let mut creations_left = shared.config.max_auto_create_per_request;
        let mut topics = Vec::with_capacity(m.topics.len());
        for name in &m.topics {
            if !shared.acl.sees(&ctx.principal, name) {
                inc(&shared.metrics.authorization_failures);
                topics.push(failed(name, ErrorCode::AuthorizationFailed));
                continue;
            }
            if let Some(t) = shared.registry.get(name) {
                topics.push(describe(&t));
                continue;
            }
            let writer = shared.acl.allows(&ctx.principal, name, Permission::Write);
            if !writer || !shared.config.auto_create_topics {
                topics.push(failed(name, ErrorCode::UnknownTopicOrPartition));
                continue;
            }
            if creations_left == 0 {
                topics.push(failed(name, ErrorCode::ResourceLimit));
                continue;
            }
            creations_left -= 1;
            match shared.topic_for_write(name).await {
                Ok(t) => topics.push(describe(&t)),
                Err(e) => topics.push(failed(name, e.code)),
            }
        }
        topics
    };
    MetadataOk {
        brokers: vec![BrokerInfo {
            id: shared.config.broker_id,
            host: shared.config.advertised_host.clone().unwrap_or_else(|| shared.local_addr.ip().to_string()),
            port: shared.local_addr.port(),
        }],
        topics,
    }
}

/// Leader id reported for a partition that has none (no in-sync replica alive): no broker
/// has it, so a client finds no link for it and asks again later.
pub(crate) const NO_LEADER: u32 = u32::MAX;

/// Metadata in a cluster: every live broker, and each partition's leader from the cluster
/// view. Offsets and size are this broker's when it leads the partition (the end offset
/// is then the high watermark); zero otherwise (ask the leader).
async fn cluster_metadata(ctx: &ConnCtx, node: &NodeInner, m: Metadata) -> MetadataOk {
    let shared = &ctx.shared;
    let describe = |view: &ClusterView, name: &str| {
        let Some(spec) = view.topics.get(name) else {
            return TopicMetadata {
                name: name.to_owned(),
                error: ErrorCode::UnknownTopicOrPartition,
                partitions: vec![],
            };
        };
        let partitions = (0..spec.value.partitions)
            .map(|p| {
                let leader = view.partition(name, p).and_then(|s| s.value.leader).unwrap_or(NO_LEADER);
                match node.replica(name, p).filter(|r| r.leader_epoch().is_some()) {
                    Some(r) => {
                        let local = r.partition.metadata(leader);
                        PartitionMetadata { end_offset: r.high_watermark(), ..local }
                    }
                    None => {
                        PartitionMetadata { partition: p, leader, log_start_offset: 0, end_offset: 0, size_bytes: 0 }
                    }
                }
            })
            .collect();
        TopicMetadata { name: name.to_owned(), error: ErrorCode::None, partitions }
    };
    let failed = |name: &str, error| TopicMetadata { name: name.to_owned(), error, partitions: vec![] };
    let mut topics = Vec::new();
    if m.topics.is_empty() {
        let view = node.view();
        for name in view.topics.keys().filter(|n| shared.acl.sees(&ctx.principal, n)) {
            topics.push(describe(&view, name));
        }
    } else {
        let mut creations_left = shared.config.max_auto_create_per_request;
        for name in &m.topics {
            if !shared.acl.sees(&ctx.principal, name) {
                inc(&shared.metrics.authorization_failures);
                topics.push(failed(name, ErrorCode::AuthorizationFailed));
                continue;
            }
            if !node.view().topics.contains_key(name) {
                let writer = shared.acl.allows(&ctx.principal, name, Permission::Write);
                if !writer || !shared.config.auto_create_topics {
                    topics.push(failed(name, ErrorCode::UnknownTopicOrPartition));
                    continue;
                }
                if creations_left == 0 {
                    topics.push(failed(name, ErrorCode::ResourceLimit));
                    continue;
                }
                creations_left -= 1;
                if let Err(e) = shared.topic_for_write(name).await {
                    topics.push(failed(name, e.code));
                    continue;
                }
            }
            topics.push(describe(&node.view(), name));
        }
    }
    let view = node.view();
    let brokers = view
        .brokers
        .values()
        .map(|b| BrokerInfo { id: b.registration.id, host: b.registration.host.clone(), port: b.registration.port })
        .collect();
    MetadataOk { brokers, topics }
}
