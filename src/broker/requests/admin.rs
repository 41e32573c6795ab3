//! `CreateTopic`: explicit topic creation, which needs `admin` permission on the topic.

use super::{denied, error, frame};
use crate::broker::acl::Permission;
use crate::broker::context::ConnCtx;
use crate::broker::writer::Pending;
use crate::protocol::frame::CreateTopic;
use crate::protocol::Payload;

/// Creates the topic and answers `CreateTopicOk`, or the reason it was not created.
pub(super) async fn create_topic(ctx: &ConnCtx, corr: u32, c: CreateTopic) -> Option<Pending> {
    if !ctx.shared.acl.allows(&ctx.principal, &c.topic, Permission::Admin) {
        return denied(ctx, corr, &c.topic, Permission::Admin);
    }
    match ctx.shared.create_topic(&c.topic, c.partitions).await {
        Ok(t) => frame(
            corr,
            Payload::CreateTopicOk(CreateTopic { topic: t.name.to_string(), partitions: t.partitions.len() as u32 }),
        ),
        Err(e) => error(corr, e.code, e.message),
    }
}
