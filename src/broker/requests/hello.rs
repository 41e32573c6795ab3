//! `Hello`: the version check and what the broker tells a new client.

use super::{error, frame};
use crate::broker::context::ConnCtx;
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
    frame(
        corr,
        Payload::HelloOk(HelloOk {
            version: PROTOCOL_VERSION,
            broker_id: ctx.shared.config.broker_id,
            principal: ctx.principal.to_string(),
            max_frame_size: ctx.shared.config.max_frame_size,
        }),
    )
}
