//! `SaslStart` / `SaslContinue`: authentication of a connection without a client
//! certificate, and re-authentication of a SASL session (PROTOCOL.md §20).
//!
//! The mechanisms run on the blocking pool (PLAIN costs a PBKDF2), holding the
//! connection's `ConnectionAuth`. Every failure is counted and logged with the remote
//! address and a reason; a password, proof or token never reaches the log.

use tokio::time::Instant;

use super::{error, frame};
use crate::auth::server::session::Now;
use crate::broker::auth::SessionState;
use crate::broker::context::ConnCtx;
use crate::broker::metrics::inc;
use crate::broker::writer::Pending;
use crate::protocol::sasl::SaslPayload;
use crate::protocol::{ErrorCode, Payload};

/// Longest mechanism name that goes into a log line as the client sent it.
const LOGGED_MECHANISM: usize = 32;

/// Answers `SaslStartOk` / `SaslContinueOk`, or an `Error` frame with the refusal.
pub(super) async fn sasl(ctx: &ConnCtx, corr: u32, p: SaslPayload) -> Option<Pending> {
    let svc = ctx.shared.auth.service.clone();
    let auth = ctx.auth.clone();
    let now = Now::current();
    let is_start = matches!(p, SaslPayload::Start(_));
    let outcome = tokio::task::spawn_blocking(move || {
        let mut a = auth.lock().expect("connection auth lock");
        let reauth = a.principal().is_some();
        let mechanism: String = match &p {
            SaslPayload::Start(s) => s.mechanism.chars().take(LOGGED_MECHANISM).collect(),
            _ => a.exchange_mechanism().map_or("(none)", |m| m.name()).to_owned(),
        };
        let r = match &p {
            SaslPayload::Start(s) => a.handle_start(&svc, s, now),
            SaslPayload::Continue(c) => a.handle_continue(&svc, c, now),
            SaslPayload::StartOk(_) | SaslPayload::ContinueOk(_) => unreachable!("dispatch sends only requests"),
        };
        (r, reauth, mechanism, a.expires_at())
    })
    .await;
    let (result, reauth, mechanism, expires_at) = match outcome {
        Ok(o) => o,
        Err(e) => return error(corr, ErrorCode::Unknown, format!("authentication task failed: {e}")),
    };
    let metrics = &ctx.shared.metrics;
    let remote = ctx.remote;
    match result {
        Ok(step) => {
            if step.complete {
                ctx.principal.set(&step.principal);
                ctx.session.send_replace(SessionState::Until(expires_at.map(Instant::from_std)));
                if reauth {
                    inc(&metrics.sasl_reauthentications);
                    tracing::debug!(%remote, principal = %step.principal, %mechanism,
                        session_lifetime_ms = step.session_lifetime_ms, "re-authenticated");
                } else {
                    ctx.span.record("principal", step.principal.as_str());
                    inc(&metrics.sasl_authentications);
                    tracing::info!(%remote, principal = %step.principal, %mechanism,
                        session_lifetime_ms = step.session_lifetime_ms, "authenticated");
                }
            }
            let payload = if is_start { SaslPayload::StartOk(step) } else { SaslPayload::ContinueOk(step) };
            frame(corr, Payload::Sasl(payload))
        }
        Err(refusal) => {
            let user = refusal.user.as_deref().unwrap_or("");
            match refusal.code {
                ErrorCode::AuthenticationFailed => {
                    inc(&metrics.sasl_failures);
                    tracing::warn!(%remote, mechanism = %mechanism, reason = refusal.reason, user, reauth,
                        "authentication failed");
                }
                ErrorCode::AuthenticationThrottled => {
                    inc(&metrics.sasl_throttled);
                    tracing::warn!(%remote, mechanism = %mechanism, "authentication throttled: too many failures from this address");
                }
                code => {
                    tracing::info!(%remote, mechanism = %mechanism, %code, reason = refusal.reason, "SASL request refused");
                }
            }
            error(corr, refusal.code, refusal.message)
        }
    }
}
