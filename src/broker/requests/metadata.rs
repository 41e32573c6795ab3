//! `Metadata`: the broker and the topics a principal may see. A named topic that does not
//! exist is auto-created (when auto-create is on) if the principal may write it, at most
//! `max_auto_create_per_request` per request.
//!
//! The answer is charged to the response budgets *before* it is built, by an estimate
//! from the registry (each topic's entry has a known size), and it never grows past that
//! charge nor past the frame limit: a topic whose entry does not fit is answered
//! `RESOURCE_LIMIT` with no partitions (and is not auto-created); once not even that
//! fits, the list ends. So a request naming thousands of topics of many partitions makes
//! the broker build at most one frame's worth of answer, and only once it is charged.

use crate::broker::acl::Permission;
use crate::broker::cluster::NodeInner;
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::topics::Topic;
use crate::broker::writer::Pending;
use crate::cluster::metadata::ClusterView;
use crate::protocol::frame::{BrokerInfo, Metadata, MetadataOk, PartitionMetadata, TopicMetadata, FRAME_HEADER_LEN};
use crate::protocol::{ErrorCode, Frame, Payload};

/// Bytes of a topic's entry in `MetadataOk`: name (u16 length + bytes), error code,
/// partition count, and 32 bytes per partition.
fn entry_len(name: &str, partitions: usize) -> usize {
    2 + name.len() + 2 + 4 + 32 * partitions
}

/// The answer under construction, never larger than `room` bytes encoded.
struct Answer {
    topics: Vec<TopicMetadata>,
    used: usize,
    room: usize,
    /// Set once an entry did not fit even without partitions: nothing more is added.
    full: bool,
}

impl Answer {
    /// Whether an entry of `partitions` partitions for `name` still fits.
    fn fits(&self, name: &str, partitions: usize) -> bool {
        !self.full && self.topics.len() < u16::MAX as usize && self.used + entry_len(name, partitions) <= self.room
    }

    /// Adds `t`, or `RESOURCE_LIMIT` in its place when it does not fit.
    fn push(&mut self, t: TopicMetadata) {
        if self.fits(&t.name, t.partitions.len()) {
            self.used += entry_len(&t.name, t.partitions.len());
            self.topics.push(t);
        } else {
            self.push_failed(&t.name, ErrorCode::ResourceLimit);
        }
    }

    /// Adds an entry without partitions, or ends the list when even that does not fit.
    fn push_failed(&mut self, name: &str, error: ErrorCode) {
        if self.fits(name, 0) {
            self.used += entry_len(name, 0);
            self.topics.push(TopicMetadata { name: name.to_owned(), error, partitions: vec![] });
        } else {
            self.full = true;
        }
    }
}

/// Answers `MetadataOk` for the requested topics (all visible ones for an empty list),
/// charged to the response budgets before it is built.
pub(super) async fn metadata(ctx: &ConnCtx, corr: u32, m: Metadata) -> Option<Pending> {
    if let Some(node) = &ctx.shared.cluster {
        return cluster_metadata(ctx, node, corr, m).await;
    }
    let shared = &ctx.shared;
    let brokers = vec![BrokerInfo {
        id: shared.config.broker_id,
        host: shared.config.advertised_host.clone().unwrap_or_else(|| shared.local_addr.ip().to_string()),
        port: shared.local_addr.port(),
    }];
    let base = FRAME_HEADER_LEN + 2 + brokers.iter().map(|b| 4 + 2 + b.host.len() + 2).sum::<usize>() + 2;
    let limit = (shared.config.max_frame_size as usize).min(ctx.responses.largest());
    // What the answer will hold, from the registry as it is now; capped by the limit.
    let listing = if m.topics.is_empty() {
        shared.registry.list().into_iter().filter(|t| shared.acl.sees(&ctx.principal, &t.name)).collect()
    } else {
        Vec::new()
    };
    let estimate = base
        + if m.topics.is_empty() {
            listing.iter().map(|t| entry_len(&t.name, t.partitions.len())).sum::<usize>()
        } else {
            let new_partitions = shared.config.default_partitions as usize;
            m.topics
                .iter()
                .map(|name| match shared.registry.get(name) {
                    Some(t) => entry_len(name, t.partitions.len()),
                    None => entry_len(name, new_partitions),
                })
                .sum::<usize>()
        };
    let mut charge = ctx.responses.charge(estimate.min(limit)).await;
    let mut answer = Answer { topics: Vec::new(), used: base, room: charge.bytes().max(base), full: false };
    let describe = |t: &Topic| TopicMetadata {
        name: t.name.to_string(),
        error: ErrorCode::None,
        partitions: t.partitions.iter().map(|p| p.metadata(shared.config.broker_id)).collect(),
    };
    if m.topics.is_empty() {
        for t in &listing {
            // Checked before the partitions are described: nothing is built that won't fit.
            if answer.fits(&t.name, t.partitions.len()) {
                answer.push(describe(t));
            } else {
                answer.push_failed(&t.name, ErrorCode::ResourceLimit);
            }
        }
    } else {
        let mut creations_left = shared.config.max_auto_create_per_request;
        for name in &m.topics {
            if !shared.acl.sees(&ctx.principal, name) {
                inc(&shared.metrics.authorization_failures);
                answer.push_failed(name, ErrorCode::AuthorizationFailed);
                continue;
            }
            if let Some(t) = shared.registry.get(name) {
                if answer.fits(name, t.partitions.len()) {
                    answer.push(describe(&t));
                } else {
                    answer.push_failed(name, ErrorCode::ResourceLimit);
                }
                continue;
            }
            let writer = shared.acl.allows(&ctx.principal, name, Permission::Write);
            if !writer || !shared.config.auto_create_topics {
                answer.push_failed(name, ErrorCode::UnknownTopicOrPartition);
                continue;
            }
            // Not created when its entry would not fit the answer.
            if creations_left == 0 || !answer.fits(name, shared.config.default_partitions as usize) {
                answer.push_failed(name, ErrorCode::ResourceLimit);
                continue;
            }
            creations_left -= 1;
            match shared.topic_for_write(name).await {
                Ok(t) => answer.push(describe(&t)),
                Err(e) => answer.push_failed(name, e.code),
            }
        }
    }
    let f = Frame { correlation_id: corr, payload: Payload::MetadataOk(MetadataOk { brokers, topics: answer.topics }) };
    debug_assert!(f.encoded_len() <= answer.room, "{} > {}", f.encoded_len(), answer.room);
    charge.shrink_to(f.encoded_len());
    Some(Pending::Charged(f, charge))
}

/// Leader id reported for a partition that has none (no in-sync replica alive): no broker
/// has it, so a client finds no link for it and asks again later.
pub(crate) const NO_LEADER: u32 = u32::MAX;

/// Metadata in a cluster: every live broker, and each partition's leader from the cluster
/// view. Offsets and size are this broker's when it leads the partition (the end offset
/// is then the high watermark); zero otherwise (ask the leader). Charged and bounded like
/// the single broker's answer, with sizes from the view.
async fn cluster_metadata(ctx: &ConnCtx, node: &NodeInner, corr: u32, m: Metadata) -> Option<Pending> {
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
    let view = node.view();
    let brokers: Vec<BrokerInfo> = view
        .brokers
        .values()
        .map(|b| BrokerInfo { id: b.registration.id, host: b.registration.host.clone(), port: b.registration.port })
        .collect();
    let base = FRAME_HEADER_LEN + 2 + brokers.iter().map(|b| 4 + 2 + b.host.len() + 2).sum::<usize>() + 2;
    let limit = (shared.config.max_frame_size as usize).min(ctx.responses.largest());
    let partitions_of = |view: &ClusterView, name: &str| view.topics.get(name).map(|t| t.value.partitions as usize);
    let listing: Vec<String> = if m.topics.is_empty() {
        view.topics.keys().filter(|n| shared.acl.sees(&ctx.principal, n)).cloned().collect()
    } else {
        Vec::new()
    };
    let names = if m.topics.is_empty() { &listing } else { &m.topics };
    let new_partitions = shared.config.default_partitions as usize;
    let estimate =
        base + names.iter().map(|n| entry_len(n, partitions_of(&view, n).unwrap_or(new_partitions))).sum::<usize>();
    let mut charge = ctx.responses.charge(estimate.min(limit)).await;
    let mut answer = Answer { topics: Vec::new(), used: base, room: charge.bytes().max(base), full: false };
    if m.topics.is_empty() {
        for name in &listing {
            let view = node.view();
            match partitions_of(&view, name) {
                Some(n) if answer.fits(name, n) => answer.push(describe(&view, name)),
                _ => answer.push_failed(name, ErrorCode::ResourceLimit),
            }
        }
    } else {
        let mut creations_left = shared.config.max_auto_create_per_request;
        for name in &m.topics {
            if !shared.acl.sees(&ctx.principal, name) {
                inc(&shared.metrics.authorization_failures);
                answer.push_failed(name, ErrorCode::AuthorizationFailed);
                continue;
            }
            if partitions_of(&node.view(), name).is_none() {
                let writer = shared.acl.allows(&ctx.principal, name, Permission::Write);
                if !writer || !shared.config.auto_create_topics {
                    answer.push_failed(name, ErrorCode::UnknownTopicOrPartition);
                    continue;
                }
                // Not created when its entry would not fit the answer.
                if creations_left == 0 || !answer.fits(name, new_partitions) {
                    answer.push_failed(name, ErrorCode::ResourceLimit);
                    continue;
                }
                creations_left -= 1;
                if let Err(e) = shared.topic_for_write(name).await {
                    answer.push_failed(name, e.code);
                    continue;
                }
            }
            let view = node.view();
            match partitions_of(&view, name) {
                Some(n) if answer.fits(name, n) => answer.push(describe(&view, name)),
                Some(_) => answer.push_failed(name, ErrorCode::ResourceLimit),
                None => answer.push_failed(name, ErrorCode::UnknownTopicOrPartition),
            }
        }
    }
    let f = Frame { correlation_id: corr, payload: Payload::MetadataOk(MetadataOk { brokers, topics: answer.topics }) };
    debug_assert!(f.encoded_len() <= answer.room, "{} > {}", f.encoded_len(), answer.room);
    charge.shrink_to(f.encoded_len());
    Some(Pending::Charged(f, charge))
}
