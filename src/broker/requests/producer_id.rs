//! `InitProducerId`: a new producer id, or the next epoch of an existing one.

use super::{error, frame};
use crate::broker::context::ConnCtx;
use crate::broker::writer::Pending;
use crate::protocol::frame::{InitProducerId, InitProducerIdOk};
use crate::protocol::{ErrorCode, Payload};

/// Answers `InitProducerIdOk` or the allocator's error. The allocator may persist a new
/// block of ids (an fsync): off the async runtime.
pub(super) async fn init_producer_id(ctx: &ConnCtx, corr: u32, req: InitProducerId) -> Option<Pending> {
    let shared = ctx.shared.clone();
    let issued = tokio::task::spawn_blocking(move || shared.producer_ids.init(req.producer_id, req.producer_epoch))
        .await
        .unwrap_or_else(|e| Err((ErrorCode::Unknown, format!("producer id task failed: {e}"))));
    match issued {
        Ok((producer_id, producer_epoch)) => {
            tracing::info!(principal = %ctx.principal, producer_id, producer_epoch, "producer id issued");
            frame(corr, Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch }))
        }
        Err((code, msg)) => error(corr, code, msg),
    }
}
