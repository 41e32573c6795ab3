//! `Fetch`: whole stored batches from an offset, as stored.

use super::{denied, error, frame};
use crate::broker::acl::Permission;
use crate::broker::context::ConnCtx;
use crate::broker::log::LogError;
use crate::broker::metrics::inc;
use crate::broker::partition::{Fetched, READ_DURABLE_WAIT};
use crate::broker::writer::Pending;
use crate::protocol::frame::{Fetch, FetchOk};
use crate::protocol::{ErrorCode, Payload};

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
    // Leave room for the frame header and the two offsets.
    let limit = (ctx.shared.config.max_frame_size as usize).saturating_sub(64);
    let max_bytes = (req.max_bytes as usize).clamp(1, limit);
    // Only durable offsets are served; at a stored but not yet durable offset the read
    // asks for the group commit and waits for it (up to READ_DURABLE_WAIT).
    match partition.read(req.offset, max_bytes, READ_DURABLE_WAIT).await {
        Ok(Fetched { batches, high_watermark, log_start_offset, .. }) if batches.len() <= limit => {
            frame(corr, Payload::FetchOk(FetchOk { high_watermark, log_start_offset, batches }))
        }
        Ok(Fetched { batches, .. }) => {
            error(corr, ErrorCode::Unknown, format!("stored batch of {} bytes exceeds the frame limit", batches.len()))
        }
        Err(LogError::OffsetOutOfRange { requested, start, end }) => {
            error(corr, ErrorCode::OffsetOutOfRange, format!("offset {requested} is outside [{start}, {end}]"))
        }
        Err(e @ LogError::Corrupt { .. }) => {
            tracing::error!(topic = %req.topic, partition = req.partition, error = %e, "stored data failed its check");
            error(corr, ErrorCode::CorruptStoredData, e.to_string())
        }
        Err(e) => error(corr, ErrorCode::StorageError, e.to_string()),
    }
}
