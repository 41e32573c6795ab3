//! One module per request kind, like mini-redis's `cmd/`: each turns a decoded request
//! into the response the stream's writer sends ([`Pending`]).
//!
//! - [`hello`], `Hello` → `HelloOk` (version check, the principal, the limits);
//! - [`producer_id`], `InitProducerId` (new ids and epoch bumps);
//! - [`metadata`], `Metadata` (and auto-create of named topics);
//! - [`admin`], `CreateTopic`;
//! - [`produce`], `Produce` (batch checks, dedup, append, the acks level);
//! - [`fetch`], `Fetch`;
//! - [`cluster`], the cluster frames (replication, describe, replicated topics).

mod admin;
mod cluster;
mod fetch;
mod hello;
mod metadata;
mod produce;
mod producer_id;

use std::time::{SystemTime, UNIX_EPOCH};

use super::acl::Permission;
use super::context::ConnCtx;
use super::metrics::inc;
use super::writer::Pending;
use crate::protocol::frame::ErrorFrame;
use crate::protocol::{ErrorCode, Frame, Payload};

/// Acts on one request; `None` when no response is sent (acks=0 produce).
pub(crate) async fn dispatch(ctx: &ConnCtx, f: Frame) -> Option<Pending> {
    let corr = f.correlation_id;
    match f.payload {
        Payload::Produce(p) => produce::produce(ctx, corr, p).await,
        Payload::Hello(h) => hello::hello(ctx, corr, h),
        Payload::InitProducerId(req) => producer_id::init_producer_id(ctx, corr, req).await,
        Payload::Metadata(_) if ctx.shared.cluster.as_ref().is_some_and(|n| n.view().stale_since.is_some()) => {
            // A retriable refusal rather than an answer from a view that may be empty
            // (right after a start) or out of date (etcd unreachable).
            error(
                corr,
                ErrorCode::MetadataUnavailable,
                "this broker's view of the cluster metadata is not current (starting, or etcd unreachable); retry or ask another broker",
            )
        }
        Payload::Metadata(m) => {
            let f = Frame { correlation_id: corr, payload: Payload::MetadataOk(metadata::metadata(ctx, m).await) };
            // A listing of many topics can be large: it counts against the response budget.
            let charge = ctx.responses.charge(f.encoded_len()).await;
            Some(Pending::Charged(f, charge))
        }
        Payload::CreateTopic(c) => admin::create_topic(ctx, corr, c).await,
        Payload::Fetch(req) => fetch::fetch(ctx, corr, req).await,
        Payload::Cluster(c) => cluster::dispatch(ctx, corr, c).await,
        other => {
            inc(&ctx.shared.metrics.bad_frames);
            error(corr, ErrorCode::InvalidRequest, format!("{:?} is a response kind, not a request", other.kind()))
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (append times).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn frame(correlation_id: u32, payload: Payload) -> Option<Pending> {
    Some(Pending::Ready(Frame { correlation_id, payload }))
}

fn error(correlation_id: u32, code: ErrorCode, message: impl Into<String>) -> Option<Pending> {
    frame(correlation_id, Payload::Error(ErrorFrame { code, message: message.into() }))
}

fn denied(ctx: &ConnCtx, corr: u32, topic: &str, perm: Permission) -> Option<Pending> {
    inc(&ctx.shared.metrics.authorization_failures);
    tracing::warn!(principal = %ctx.principal, topic, permission = %perm, "request denied by ACL");
    error(corr, ErrorCode::AuthorizationFailed, format!("principal '{}' may not {perm} topic '{topic}'", ctx.principal))
}
