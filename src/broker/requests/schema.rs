//! Schema registry frames (`0x20`–`0x2b`): served against the registry this broker hosts,
//! with subjects protected by the ACL like topics.

use crate::broker::acl::Permission;
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::writer::Pending;
use crate::protocol::schema::SchemaFrame;
use crate::protocol::{ErrorCode, Frame, Payload, RecordBatch};
use crate::schema::policy::check_record;
use crate::schema::rest::{Operation, Resource};
use crate::schema::service::serve;
use crate::schema::SchemaPolicy;

use super::produce::MAX_DECOMPRESSED;

fn permission(op: Operation) -> Permission {
    match op {
        Operation::Read => Permission::Read,
        Operation::Write => Permission::Write,
        Operation::Admin => Permission::Admin,
    }
}

pub(super) async fn schema(ctx: &ConnCtx, corr: u32, request: SchemaFrame) -> Option<Pending> {
    let shared = &ctx.shared;
    inc(&shared.metrics.schema_requests);
    let principal: &str = &ctx.principal;
    let allowed = |op: Operation, r: Resource<'_>| {
        let perm = permission(op);
        let ok = match r {
            Resource::Subject(s) => shared.acl.allows_subject(principal, s, perm),
            Resource::Global => shared.acl.allows_subject(principal, "*", perm),
            Resource::Topic(t) => shared.acl.allows(principal, t, perm),
        };
        if !ok {
            inc(&shared.metrics.authorization_failures);
            tracing::warn!(principal, resource = ?r, permission = %perm, "schema registry request denied by ACL");
        }
        ok
    };
    let topic_exists = |t: &str| shared.registry.get(t).is_some();
    match serve(&shared.schemas, request, allowed, topic_exists).await {
        Ok(answer) => {
            let f = Frame { correlation_id: corr, payload: Payload::Schema(answer) };
            // Subject lists and schema texts can be large: they count against the budget.
            let charge = ctx.responses.charge(f.encoded_len()).await;
            Some(Pending::Charged(f, charge))
        }
        Err(e) => super::error(corr, ErrorCode::from_u16(e.code).unwrap_or(ErrorCode::Unknown), e.message),
    }
}

/// A topic's schema policy applied to a produced batch, before the dedup lookup and the
/// append. `none`: nothing to do. `warn`: records that fail are logged and counted, the
/// batch is stored. `enforce`: the batch is refused with the first failure's code
/// (`SCHEMA_REQUIRED`, or `INVALID_RECORD` with payload validation on). A batch that does
/// not decode is left to the append's own check (it is refused as corrupt there).
pub(super) async fn check_policy(ctx: &ConnCtx, topic: &str, batch: &bytes::Bytes) -> Result<(), (ErrorCode, String)> {
    let shared = &ctx.shared;
    let (policy, validate) = shared.schemas.topic_policy(topic);
    if policy == SchemaPolicy::None {
        return Ok(());
    }
    let Ok(records) = RecordBatch::from_bytes(batch.clone()).and_then(|b| b.records(MAX_DECOMPRESSED)) else {
        return Ok(());
    };
    for (i, r) in records.iter().enumerate() {
        let Err(refusal) = check_record(&shared.schemas, topic, &r.headers, r.value.as_deref(), validate).await else {
            continue;
        };
        let code = ErrorCode::from_u16(refusal.code).unwrap_or(ErrorCode::SchemaRequired);
        let message = format!("record {i} of the batch: {}", refusal.message);
        if policy == SchemaPolicy::Warn {
            inc(&shared.metrics.schema_policy_warnings);
            tracing::warn!(principal = %ctx.principal, topic, %code, %message, "record stored despite the topic's schema policy (warn)");
            continue;
        }
        inc(&shared.metrics.schema_policy_refusals);
        return Err((code, message));
    }
    Ok(())
}
