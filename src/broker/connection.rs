//! The per-connection loop: a completed handshake becomes a principal, every stream the
//! client opens gets a reader (framing + dispatch) and a response writer.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;

use super::admission::Admitted;
use super::context::{ConnCtx, Shared};
use super::framing::{FrameReader, ReadEvent, STOP_BAD_FRAMING};
use super::metrics::inc;
use super::requests::dispatch;
use super::writer::{write_responses, Pending, RESPONSE_QUEUE};
use crate::protocol::frame::ErrorFrame;
use crate::protocol::{ErrorCode, Frame, Payload};
use crate::transport::certs::{principal_of, CertError};

/// Completes the handshake of `incoming` (within the handshake timeout), then serves its
/// streams until the client goes away or the broker shuts down. The connection's slot is
/// held until then; `_alive` until every stream has finished.
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
    let principal = match peer_principal(&conn) {
        Ok(p) => p,
        Err(e) => {
            inc(&shared.metrics.handshake_failures);
            tracing::warn!(%remote, error = %e, "client certificate has no usable principal");
            conn.close(2u8.into(), b"client certificate has no principal");
            return;
        }
    };
    inc(&shared.metrics.connections_accepted);
    tracing::info!(%remote, %principal, "client connected");
    let budget = shared.config.max_buffered_bytes_per_connection.clamp(1, u64::from(u32::MAX)) as usize;
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        principal: Arc::from(principal.as_str()),
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
                tokio::spawn(async move {
                    serve_stream(ctx, send, recv).await;
                    drop(alive);
                });
            }
            Err(e) => {
                tracing::info!(%remote, %principal, reason = %e, "client disconnected");
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

fn peer_principal(conn: &quinn::Connection) -> Result<String, CertError> {
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(CertError::NoPrincipal)?;
    let leaf = certs.first().ok_or(CertError::NoPrincipal)?;
    principal_of(leaf)
}

fn error_frame(correlation_id: u32, code: ErrorCode, message: String) -> Pending {
    Pending::Ready(Frame { correlation_id, payload: Payload::Error(ErrorFrame { code, message }) })
}

/// Serves one bidirectional stream: reads pipelined requests, dispatches each, and hands
/// the responses in request order to the stream's writer, until the client finishes the
/// stream, framing is lost, the connection drops or the broker shuts down.
async fn serve_stream(ctx: Arc<ConnCtx>, send: quinn::SendStream, recv: quinn::RecvStream) {
    let shared = &ctx.shared;
    inc(&shared.metrics.streams_opened);
    let (tx, rx) = mpsc::channel::<Pending>(RESPONSE_QUEUE);
    let stall = match shared.config.response_stall_timeout_secs {
        0 => None,
        s => Some(std::time::Duration::from_secs(s)),
    };
    let writer = tokio::spawn(write_responses(send, rx, stall, shared.metrics.clone()));
    let mut shutdown = shared.shutdown.clone();
    let mut reader = FrameReader::new(
        recv,
        shared.config.max_frame_size as usize,
        ctx.frame_budget.clone(),
        shared.config.max_buffered_bytes_per_connection,
    );
    loop {
        let event = tokio::select! {
            biased;
            e = reader.next() => e,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let response = match event {
            ReadEvent::Frame(f) => match dispatch(&ctx, f).await {
                Some(p) => p,
                None => continue,
            },
            ReadEvent::Bad(e) => {
                inc(&shared.metrics.bad_frames);
                tracing::warn!(remote = %ctx.remote, principal = %ctx.principal, error = %e, "bad frame");
                let resumable = e.resumable;
                let p = error_frame(e.correlation_id.unwrap_or(0), e.code(), e.error.to_string());
                if tx.send(p).await.is_err() {
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
                error_frame(correlation_id, ErrorCode::ResourceLimit, msg)
            }
            ReadEvent::Truncated { pending } => {
                inc(&shared.metrics.bad_frames);
                tracing::warn!(remote = %ctx.remote, pending, "stream finished inside a frame");
                let msg = format!("stream finished inside a frame ({pending} bytes pending)");
                let _ = tx.send(error_frame(0, ErrorCode::MalformedFrame, msg)).await;
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
