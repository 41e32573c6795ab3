//! `Hello`: the version check, and what the broker tells a new client: its id, the
//! principal it sees, and the limits the client must respect.

use super::{error, frame};
use crate::broker::context::ConnCtx;
use crate::broker::producer_state::MAX_CACHED_BATCHES;
use crate::broker::writer::Pending;
use crate::protocol::frame::{Hello, HelloOk};
use crate::protocol::{ErrorCode, Payload, PROTOCOL_VERSION};

/// Answers `HelloOk`, or `UNSUPPORTED_VERSION` for another protocol version.
pub(super) fn hello(ctx: &ConnCtx, corr: u32, h: Hello) -> Option<Pending> {
    if h.version != PROTOCOL_VERSION {
        return error(
            corr,
            ErrorCode::UnsupportedVersion,
            format!("protocol version {} not supported; this broker speaks {PROTOCOL_VERSION}", h.version),
        );
    }
    tracing::debug!(remote = %ctx.remote, principal = %ctx.principal, client_id = %h.client_id, "hello");
    let config = &ctx.shared.config;
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    frame(
        corr,
        Payload::HelloOk(HelloOk {
            version: PROTOCOL_VERSION,
            broker_id: config.broker_id,
            principal: ctx.principal.to_string(),
            max_frame_size: config.max_frame_size,
            max_batch_bytes: config.batch_limit(),
            max_fetch_bytes: config.batch_limit(),
            max_in_flight_per_partition: MAX_CACHED_BATCHES as u16,
            max_unfinished_frame_bytes: clamp(config.max_buffered_bytes_per_connection),
            max_response_bytes: clamp(config.max_response_bytes_per_connection),
            // Produce passes the id's current epoch as the partition's fence: a batch of
            // an older epoch gets the dedup lookup first, then INVALID_PRODUCER_EPOCH.
            features: HelloOk::PER_PARTITION_EPOCHS,
        }),
    )
}
