//! One module per request kind, like mini-redis's `cmd/`: each turns a decoded request
//! into the response the stream's writer sends ([`Pending`]).
//!
//! - [`hello`], `Hello` → `HelloOk` (version check, the principal, the limits);
//! - [`sasl`], `SaslStart` / `SaslContinue` (authentication without a certificate);
//! - [`producer_id`], `InitProducerId` (new ids and epoch bumps);
//! - [`metadata`], `Metadata` (and auto-create of named topics);
//! - [`admin`], `CreateTopic`;
//! - [`produce`], `Produce` (batch checks, dedup, append, the acks level);
//! - [`fetch`], `Fetch`;
//! - [`cluster`], the cluster frames (replication, describe, replicated topics);
//! - [`schema`], the schema registry frames (`0x20`–`0x2b`).

mod admin;
mod cluster;
mod fetch;
mod hello;
mod metadata;
mod produce;
mod producer_id;
mod sasl;
mod schema;

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::Empty;
use tracing::Instrument;

use super::acl::Permission;
use super::context::ConnCtx;
use super::metrics::inc;
use super::writer::Pending;
use crate::protocol::frame::{ErrorFrame, ProduceResult};
use crate::protocol::sasl::SaslPayload;
use crate::protocol::{Acks, ErrorCode, Frame, Payload};

/// Acts on one request; `None` when no response is sent (acks=0 produce). A connection
/// that has not authenticated yet (no certificate, no SASL) is served `Hello` and SASL
/// only.
///
/// Each request runs in a `debug` span named after its kind, with the fields people
/// search by: `correlation_id`, `principal`, and for produce `topic`, `partition`, `acks`,
/// `producer_id`, `producer_epoch`, `sequence`, `records`, `base_offset`; for fetch
/// `topic`, `partition`, `offset` (`RUST_LOG=qwire=debug` shows them).
pub(crate) async fn dispatch(ctx: &ConnCtx, f: Frame) -> Option<Pending> {
    let corr = f.correlation_id;
    if !ctx.principal.is_set()
        && !matches!(f.payload, Payload::Hello(_) | Payload::Sasl(SaslPayload::Start(_) | SaslPayload::Continue(_)))
    {
        return unauthenticated(ctx, corr, &f.payload);
    }
    match f.payload {
        Payload::Produce(p) => {
            let span = tracing::debug_span!(
                "produce",
                correlation_id = corr,
                principal = %ctx.principal,
                topic = %p.topic,
                partition = p.partition,
                acks = %p.acks,
                producer_id = Empty,
                producer_epoch = Empty,
                sequence = Empty,
                records = Empty,
                base_offset = Empty,
            );
            produce::produce(ctx, corr, p).instrument(span).await
        }
        Payload::Fetch(req) => {
            let span = tracing::debug_span!(
                "fetch",
                correlation_id = corr,
                principal = %ctx.principal,
                topic = %req.topic,
                partition = req.partition,
                offset = req.offset,
            );
            fetch::fetch(ctx, corr, req).instrument(span).await
        }
        payload => {
            let span = tracing::debug_span!("request", kind = ?payload.kind(), correlation_id = corr, principal = %ctx.principal);
            other(ctx, corr, payload).instrument(span).await
        }
    }
}

/// The requests other than produce and fetch.
async fn other(ctx: &ConnCtx, corr: u32, payload: Payload) -> Option<Pending> {
    match payload {
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
        // Charged to the response budget before it is built, and bounded.
        Payload::Metadata(m) => metadata::metadata(ctx, corr, m).await,
        Payload::CreateTopic(c) => admin::create_topic(ctx, corr, c).await,
        Payload::Cluster(c) => cluster::dispatch(ctx, corr, c).await,
        Payload::Sasl(p @ (SaslPayload::Start(_) | SaslPayload::Continue(_))) => sasl::sasl(ctx, corr, p).await,
        Payload::Schema(req) if req.kind() < 0x80 => schema::schema(ctx, corr, req).await,
        other => {
            inc(&ctx.shared.metrics.bad_frames);
            error(corr, ErrorCode::InvalidRequest, format!("{:?} is a response kind, not a request", other.kind()))
        }
    }
}

/// Refuses a request sent before authentication: `AUTHENTICATION_REQUIRED` (in a
/// `ProduceResult` for a produce, nothing for an acks=0 produce).
fn unauthenticated(ctx: &ConnCtx, corr: u32, p: &Payload) -> Option<Pending> {
    inc(&ctx.shared.metrics.sasl_unauthenticated_requests);
    tracing::debug!(remote = %ctx.remote, kind = ?p.kind(), "request before authentication refused");
    let message = "this connection has no client certificate: authenticate with SASL first".to_owned();
    match p {
        Payload::Produce(pr) if pr.acks == Acks::None => None,
        Payload::Produce(_) => frame(
            corr,
            Payload::ProduceResult(ProduceResult {
                error: ErrorCode::AuthenticationRequired,
                duplicate: false,
                base_offset: -1,
                log_append_time: -1,
                message,
            }),
        ),
        _ => error(corr, ErrorCode::AuthenticationRequired, message),
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
