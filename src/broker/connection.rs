//! The per-connection loop: a completed handshake becomes a principal (from the client
//! certificate, or later from SASL for a client without one), every stream the client
//! opens gets a reader (framing + dispatch) and a response writer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::admission::Admitted;
use super::auth::{watch_session, SessionState};
use super::context::{ConnCtx, Principal, Shared};
use super::framing::{FrameReader, ReadEvent, STOP_BAD_FRAMING};
use super::metrics::inc;
use super::requests::dispatch;
use super::telemetry::GaugeGuard;
use super::writer::{write_responses, Pending, Queued, RESPONSE_QUEUE};
use crate::auth::server::session::ConnectionAuth;
use crate::protocol::frame::ErrorFrame;
use crate::protocol::{ErrorCode, Frame, Payload};
use crate::transport::certs::{principal_of, CertError};

/// Completes the handshake of `incoming` (within the handshake timeout), then serves its
/// streams until the client goes away or the broker shuts down. The connection's slot is
/// held until then; `_alive` until every stream has finished. Runs in a `connection` span
/// with the client's `remote` address and, once known, its `principal`.
#[tracing::instrument(name = "connection", skip_all, fields(remote = %incoming.remote_address(), principal = tracing::field::Empty))]
pub(crate) async fn serve_connection(
    incoming: quinn::Incoming,
    admitted: Admitted,
    shared: Arc<Shared>,
    _alive: mpsc::Sender<()>,
) {
    let remote = incoming.remote_address();
    let Admitted { slot: _slot, handshake } = admitted;
    let timeout = std::time::Duration::from_millis(shared.config.handshake_timeout_ms);
    let conn = match tokio::time::timeout(timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            inc(&shared.metrics.handshake_failures);
            tracing::warn!(%remote, error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            // Dropping the unfinished handshake closes it.
            inc(&shared.metrics.handshake_timeouts);
            tracing::warn!(%remote, ?timeout, "handshake failed: not completed within the handshake timeout");
            return;
        }
    };
    drop(handshake);
    // With client auth `optional` TLS lets a client in without a certificate; one that
    // presented a certificate had it verified and is authenticated by it.
    let (principal, auth) = match peer_principal(&conn) {
        Ok(Some(p)) => (Principal::fixed(&p), ConnectionAuth::by_certificate(p, remote.ip())),
        Ok(None) => (Principal::default(), ConnectionAuth::unauthenticated(remote.ip())),
        Err(e) => {
            inc(&shared.metrics.handshake_failures);
            tracing::warn!(%remote, error = %e, "client certificate has no usable principal");
            conn.close(2u8.into(), b"client certificate has no principal");
            return;
        }
    };
    inc(&shared.metrics.connections_accepted);
    let (session, session_rx) = watch::channel(SessionState::Pending);
    if principal.is_set() {
        tracing::Span::current().record("principal", &*principal);
        tracing::info!(%remote, %principal, "client connected");
    } else {
        let pending = match shared.auth.pending.try_take(remote.ip()) {
            Ok(p) => p,
            Err(why) => {
                inc(&shared.metrics.sasl_unauthenticated_refused);
                tracing::warn!(%remote, "{why}: closing a connection without a certificate");
                conn.close(u32::from(ErrorCode::AuthenticationThrottled.as_u16()).into(), why.as_bytes());
                return;
            }
        };
        tracing::info!(%remote, "client connected without a certificate: it must authenticate with SASL");
        let deadline = Duration::from_millis(shared.config.auth.auth_timeout_ms);
        tokio::spawn(watch_session(conn.clone(), session_rx, deadline, shared.metrics.clone(), remote, pending));
    }
    let budget = shared.config.max_buffered_bytes_per_connection.clamp(1, u64::from(u32::MAX)) as usize;
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        principal,
        span: tracing::Span::current(),
        auth: Arc::new(Mutex::new(auth)),
        session,
        remote,
        frame_budget: Arc::new(tokio::sync::Semaphore::new(budget)),
        responses: shared.response_budget.connection(shared.config.max_response_bytes_per_connection),
    });
    let (streams_tx, mut streams_rx) = mpsc::channel::<()>(1);
    let mut shutdown = shared.shutdown.clone();
    loop {
        let stream = tokio::select! {
            s = conn.accept_bi() => s,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match stream {
            Ok((send, recv)) => {
                let ctx = ctx.clone();
                let alive = streams_tx.clone();
                tokio::spawn(
                    async move {
                        serve_stream(ctx, send, recv).await;
                        drop(alive);
                    }
                    .in_current_span(),
                );
            }
            Err(e) => {
                tracing::info!(%remote, principal = %ctx.principal, reason = %e, "client disconnected");
                break;
            }
        }
    }
    drop(streams_tx);
    let _ = streams_rx.recv().await;
    if *shutdown.borrow() {
        conn.close(0u8.into(), b"broker shutting down");
    }
}

/// The principal of the client certificate; `None` when the client presented none (only
/// possible with client auth `optional`).
fn peer_principal(conn: &quinn::Connection) -> Result<Option<String>, CertError> {
    let Some(identity) = conn.peer_identity() else { return Ok(None) };
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().map_err(|_| CertError::NoPrincipal)?;
    match certs.first() {
        None => Ok(None),
        Some(leaf) => principal_of(leaf).map(Some),
    }
}

fn error_frame(correlation_id: u32, code: ErrorCode, message: String) -> Pending {
    Pending::Ready(Frame { correlation_id, payload: Payload::Error(ErrorFrame { code, message }) })
}

/// Serves one bidirectional stream: reads pipelined requests, dispatches each, and hands
/// the responses in request order to the stream's writer, until the client finishes the
/// stream, framing is lost, the connection drops or the broker shuts down.
/// Each request read holds a `requests_in_flight` count until its response is written (or
/// dropped).
async fn serve_stream(ctx: Arc<ConnCtx>, send: quinn::SendStream, recv: quinn::RecvStream) {
    let shared = &ctx.shared;
    inc(&shared.metrics.streams_opened);
    let _open = GaugeGuard::new(&shared.metrics, |m| &m.streams_open, 1);
    let (tx, rx) = mpsc::channel::<Queued>(RESPONSE_QUEUE);
    let stall = match shared.config.response_stall_timeout_secs {
        0 => None,
        s => Some(std::time::Duration::from_secs(s)),
    };
    let writer = tokio::spawn(write_responses(send, rx, stall, shared.metrics.clone()).in_current_span());
    let mut shutdown = shared.shutdown.clone();
    let mut reader = FrameReader::new(
        recv,
        shared.config.max_frame_size as usize,
        ctx.frame_budget.clone(),
        shared.config.max_buffered_bytes_per_connection,
        shared.metrics.clone(),
    );
    loop {
        let event = tokio::select! {
            biased;
            e = reader.next() => e,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let response = match event {
            ReadEvent::Frame(f, held) => {
                let in_flight = GaugeGuard::new(&shared.metrics, |m| &m.requests_in_flight, 1);
                let response = dispatch(&ctx, f).await;
                // Only now: a produce waits for its partition's owner holding its batch.
                drop(held);
                match response {
                    Some(p) => Queued(p, Some(in_flight)),
                    None => continue,
                }
            }
            ReadEvent::Bad(e) => {
                inc(&shared.metrics.bad_frames);
                tracing::warn!(remote = %ctx.remote, principal = %ctx.principal, error = %e, "bad frame");
                let resumable = e.resumable;
                let p = error_frame(e.correlation_id.unwrap_or(0), e.code(), e.error.to_string());
                if tx.send(Queued(p, None)).await.is_err() {
                    reader.stop(STOP_BAD_FRAMING);
                    break;
                }
                if resumable {
                    continue;
                }
                break;
            }
            ReadEvent::Refused { correlation_id, frame_bytes, budget } => {
                tracing::debug!(remote = %ctx.remote, principal = %ctx.principal, frame_bytes,
                    "frame refused: the connection's budget for unfinished frames is used up");
                let msg = format!("this connection already holds {budget} bytes of unfinished frames; retry later");
                Queued(error_frame(correlation_id, ErrorCode::ResourceLimit, msg), None)
            }
            ReadEvent::Truncated { pending } => {
                inc(&shared.metrics.bad_frames);
                tracing::warn!(remote = %ctx.remote, pending, "stream finished inside a frame");
                let msg = format!("stream finished inside a frame ({pending} bytes pending)");
                let _ = tx.send(Queued(error_frame(0, ErrorCode::MalformedFrame, msg), None)).await;
                break;
            }
            ReadEvent::End => break,
        };
        if tx.send(response).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
