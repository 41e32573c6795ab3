//! `Fetch`: whole stored batches from an offset, as stored.

use super::{cluster, denied, error};
use crate::broker::acl::Permission;
use crate::broker::context::ConnCtx;
use crate::broker::log::LogError;
use crate::broker::metrics::{add, inc};
use crate::broker::partition::{Fetched, READ_DURABLE_WAIT};
use crate::broker::writer::Pending;
use crate::protocol::frame::{Fetch, FetchOk};
use crate::protocol::{ErrorCode, Frame, Payload};

/// The least a fetch is charged to the response budgets while it is served (until its
/// answer is read, when the charge shrinks to the answer's size): a `max_bytes` of 1 must
/// not let a connection have thousands of reads in progress for nothing.
pub(crate) const FETCH_CHARGE_FLOOR: usize = 64 * 1024;

/// Answers `FetchOk` with the batches from `req.offset`, or why there are none.
pub(super) async fn fetch(ctx: &ConnCtx, corr: u32, req: Fetch) -> Option<Pending> {
    inc(&ctx.shared.metrics.fetch_requests);
    if !ctx.shared.acl.allows(&ctx.principal, &req.topic, Permission::Read) {
        return denied(ctx, corr, &req.topic, Permission::Read);
    }
    let Some(topic) = ctx.shared.registry.get(&req.topic) else {
        return error(corr, ErrorCode::UnknownTopicOrPartition, format!("topic '{}' does not exist", req.topic));
    };
    let Some(partition) = topic.partitions.get(req.partition as usize) else {
        return error(
            corr,
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "topic '{}' has {} partitions; {} does not exist",
                req.topic,
                topic.partitions.len(),
                req.partition
            ),
        );
    };
    // In a cluster only the leader serves reads, up to its high watermark: a record a
    // consumer sees is on every in-sync replica's disk and is never taken back.
    let leader = match &ctx.shared.cluster {
        Some(node) => match cluster::leading(node, corr, &req.topic, req.partition) {
            Ok((replica, _)) => Some(replica),
            Err(f) => return Some(Pending::Ready(f)),
        },
        None => None,
    };
    if let Some(r) = &leader {
        if req.offset >= r.high_watermark() && req.offset < partition.log_end() {
            let _ = tokio::time::timeout(READ_DURABLE_WAIT, r.wait_high_watermark(req.offset + 1)).await;
        }
    }
    // No stored batch is larger than the batch limit, and a response holds whole batches
    // up to max_bytes (or the first alone, if larger): clamped to the batch limit, every
    // response fits a frame.
    let limit = ctx.shared.config.batch_limit() as usize;
    let max_bytes = (req.max_bytes as usize).clamp(1, limit);
    // Charge the response before reading: a client that does not read its responses
    // waits here once its connection's budget is used, holding no more than that. At
    // least FETCH_CHARGE_FLOOR while it is served, whatever max_bytes says: each fetch
    // holds a read, and its first batch may be larger than asked.
    let mut want = max_bytes.max(FETCH_CHARGE_FLOOR);
    let (batches, high_watermark, log_start_offset, charge) = loop {
        let mut charge = ctx.responses.charge(want).await;
        // Only durable offsets are served; at a stored but not yet durable offset the
        // read asks for the group commit and waits for it (up to READ_DURABLE_WAIT).
        let wait = if leader.is_some() { std::time::Duration::ZERO } else { READ_DURABLE_WAIT };
        let Fetched { batches, high_watermark, log_start_offset, .. } = match partition
            .read(req.offset, max_bytes, wait)
            .await
        {
            Ok(r) => r,
            Err(LogError::OffsetOutOfRange { requested, start, end }) => {
                return error(
                    corr,
                    ErrorCode::OffsetOutOfRange,
                    format!("offset {requested} is outside [{start}, {end}]"),
                )
            }
            Err(e @ LogError::Corrupt { .. }) => {
                tracing::error!(topic = %req.topic, partition = req.partition, error = %e, "stored data failed its check");
                return error(corr, ErrorCode::CorruptStoredData, e.to_string());
            }
            Err(e) => return error(corr, ErrorCode::StorageError, e.to_string()),
        };
        let (batches, high_watermark) = match &leader {
            Some(r) => {
                let hw = r.high_watermark();
                (cluster::trim_to(batches, hw), hw)
            }
            None => (batches, high_watermark),
        };
        // The first batch alone may exceed what was asked for (and charged).
        if batches.len() > charge.bytes() && charge.bytes() < ctx.responses.largest() {
            match ctx.responses.try_charge(batches.len() - charge.bytes()) {
                Some(more) => charge.merge(more),
                None => {
                    // Never hold uncharged bytes while waiting: drop them, wait for room
                    // for the whole size, read again.
                    want = batches.len();
                    continue;
                }
            }
        }
        charge.shrink_to(batches.len());
        break (batches, high_watermark, log_start_offset, charge);
    };
    // A response holds at most max_bytes (≤ the limit) unless its first batch alone is
    // larger: only a batch stored under a larger limit than today's can be, and sending
    // it would break the max_fetch_bytes promised in HelloOk.
    if batches.len() > limit {
        return error(
            corr,
            ErrorCode::BatchTooLarge,
            format!(
                "the stored batch at offset {} is {} bytes, more than this broker's max_fetch_bytes ({limit}); \
                 it was stored under a larger limit",
                req.offset,
                batches.len(),
            ),
        );
    }
    add(&ctx.shared.metrics.fetch_bytes, batches.len() as u64);
    add(&partition.counters.fetch_bytes, batches.len() as u64);
    let ok = FetchOk { high_watermark, log_start_offset, batches };
    Some(Pending::Charged(Frame { correlation_id: corr, payload: Payload::FetchOk(ok) }, charge))
}
