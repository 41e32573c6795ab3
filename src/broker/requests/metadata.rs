//! `Metadata`: the broker and the topics a principal may see. A named topic that does not
//! exist is auto-created (when auto-create is on) if the principal may write it, at most
//! `max_auto_create_per_request` per request.

use crate::broker::acl::Permission;
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::topics::Topic;
use crate::protocol::frame::{BrokerInfo, Metadata, MetadataOk, TopicMetadata};
use crate::protocol::ErrorCode;

/// Describes the requested topics (all visible ones for an empty list).
pub(super) async fn metadata(ctx: &ConnCtx, m: Metadata) -> MetadataOk {
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
