//! `InitProducerId`: a new producer id, or the next epoch of an existing one.
//!
//! Needs write permission on at least one topic (like Kafka's `IdempotentWrite`): a
//! principal that may not produce anywhere has no use for an id. Ids are bound to the
//! principal that got them; a bump must present the id's current epoch.

use std::sync::Arc;

use super::{error, frame, now_ms};
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::producer_ids::ProducerIdAllocator;
use crate::broker::writer::Pending;
use crate::protocol::frame::{InitProducerId, InitProducerIdOk};
use crate::protocol::{ErrorCode, Payload};

/// Answers `InitProducerIdOk`, or why no id or epoch was issued.
pub(super) async fn init_producer_id(ctx: &ConnCtx, corr: u32, req: InitProducerId) -> Option<Pending> {
    let shared = &ctx.shared;
    if !shared.acl.may_write_some_topic(&ctx.principal) {
        inc(&shared.metrics.authorization_failures);
        tracing::warn!(principal = %ctx.principal, "InitProducerId denied by ACL: no write permission on any topic");
        return error(
            corr,
            ErrorCode::AuthorizationFailed,
            format!("principal '{}' may not write any topic, so it gets no producer id", ctx.principal),
        );
    }
    let principal: Arc<str> = ctx.principal.arc();
    let issued = match &ctx.shared.cluster {
        // In a cluster the ids live in the metadata store: any broker issues, every leader checks.
        Some(node) => node.producer_ids.init(&principal, req.producer_id, req.producer_epoch).await,
        // One issue or bump at a time; the answer is fsync'd before it is sent.
        None => {
            ProducerIdAllocator::init(
                ctx.shared.clone(),
                |s| &s.producer_ids,
                principal,
                req.producer_id,
                req.producer_epoch,
                now_ms(),
            )
            .await
        }
    };
    match issued {
        Ok((producer_id, producer_epoch)) => {
            tracing::info!(principal = %ctx.principal, producer_id, producer_epoch, "producer id issued");
            frame(corr, Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch }))
        }
        Err((code, msg)) => {
            tracing::info!(principal = %ctx.principal, producer_id = req.producer_id,
                producer_epoch = req.producer_epoch, %code, %msg, "InitProducerId refused");
            error(corr, code, msg)
        }
    }
}
