//! `InitProducerId`: a new producer id, or the next epoch of an existing one.

use super::{error, frame};
use crate::broker::context::ConnCtx;
use crate::broker::writer::Pending;
use crate::protocol::frame::{InitProducerId, InitProducerIdOk};
use crate::protocol::Payload;

/// Answers `InitProducerIdOk` or the allocator's error.
pub(super) fn init_producer_id(ctx: &ConnCtx, corr: u32, req: InitProducerId) -> Option<Pending> {
    match ctx.shared.producer_ids.init(req.producer_id, req.producer_epoch) {
        Ok((producer_id, producer_epoch)) => {
            tracing::info!(principal = %ctx.principal, producer_id, producer_epoch, "producer id issued");
            frame(corr, Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch }))
        }
        Err((code, msg)) => error(corr, code, msg),
    }
}
