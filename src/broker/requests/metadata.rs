//! `Metadata`: the broker and the topics a principal may see; a named topic the principal
//! may write is auto-created when auto-create is on.

use crate::broker::acl::Permission;
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::topics::Topic;
use crate::protocol::frame::{BrokerInfo, Metadata, MetadataOk, TopicMetadata};
use crate::protocol::ErrorCode;

/// Describes the requested topics (all visible ones for an empty list).
pub(super) fn metadata(ctx: &ConnCtx, m: Metadata) -> MetadataOk {
    let shared = &ctx.shared;
    let describe = |t: &Topic| TopicMetadata {
        name: t.name.to_string(),
        error: ErrorCode::None,
        partitions: t.partitions.iter().map(|p| p.metadata(shared.config.broker_id)).collect(),
    };
    let topics = if m.topics.is_empty() {
        shared
            .registry
            .list()
            .iter()
            .filter(|t| shared.acl.sees(&ctx.principal, &t.name))
            .map(|t| describe(t))
            .collect()
    } else {
        m.topics
            .iter()
            .map(|name| {
                if !shared.acl.sees(&ctx.principal, name) {
                    inc(&shared.metrics.authorization_failures);
                    return TopicMetadata {
                        name: name.clone(),
                        error: ErrorCode::AuthorizationFailed,
                        partitions: vec![],
                    };
                }
                let found = if shared.acl.allows(&ctx.principal, name, Permission::Write) {
                    shared.topic_for_write(name).map_err(|e| e.code)
                } else {
                    shared.registry.get(name).ok_or(ErrorCode::UnknownTopicOrPartition)
                };
                match found {
                    Ok(t) => describe(&t),
                    Err(code) => TopicMetadata { name: name.clone(), error: code, partitions: vec![] },
                }
            })
            .collect()
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
