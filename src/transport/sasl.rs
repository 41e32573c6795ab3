//! SASL on a broker connection (PROTOCOL.md §20): the exchange on a stream, and the task
//! that re-authenticates a session before it ends (Kafka's KIP-368).
//!
//! Re-authentication runs on a stream of its own, so the connection's other streams
//! (the producer's in-flight batches) go on untouched while it happens.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::connection::{FrameStream, TransportError};
use crate::auth::client::{reauthenticate_after, Next, SaslCredentials, Session};
use crate::protocol::sasl::SaslPayload;
use crate::protocol::Payload;

/// Runs one SASL exchange with `credentials` on `stream` (for tokens, asking the provider
/// for a fresh one first). A refusal by the broker is [`TransportError::Broker`] with its
/// authentication code; a failure on this side is [`TransportError::Sasl`].
pub async fn authenticate(
    stream: &mut FrameStream,
    addr: SocketAddr,
    credentials: &SaslCredentials,
) -> Result<Session, TransportError> {
    let sasl = |source| TransportError::Sasl { addr, source };
    let mut exchange = credentials.begin().await.map_err(sasl)?;
    let mut answer = stream.call(Payload::Sasl(SaslPayload::Start(exchange.start()))).await?;
    loop {
        let step = match answer {
            Payload::Sasl(SaslPayload::StartOk(s) | SaslPayload::ContinueOk(s)) => s,
            other => {
                return Err(TransportError::UnexpectedResponse {
                    addr,
                    detail: format!("expected a SASL answer, got {:?}", other.kind()),
                })
            }
        };
        match exchange.step(&step).map_err(sasl)? {
            Next::Continue(c) => answer = stream.call(Payload::Sasl(SaslPayload::Continue(c))).await?,
            Next::Done(session) => return Ok(session),
        }
    }
}

/// Shortest wait between two failed re-authentication attempts.
const RETRY_MIN: Duration = Duration::from_millis(100);

/// Re-authenticates a connection's SASL session before each expiry, for the connection's
/// life. Dropping it stops the task.
#[derive(Debug)]
pub struct Reauthenticator {
    task: tokio::task::JoinHandle<()>,
    session: watch::Receiver<Session>,
}

impl Reauthenticator {
    /// Starts the task for a session that expires (`None` when `session` does not).
    pub fn spawn(
        conn: quinn::Connection,
        addr: SocketAddr,
        credentials: SaslCredentials,
        session: Session,
        max_frame: usize,
    ) -> Option<Reauthenticator> {
        session.lifetime?;
        let (tx, rx) = watch::channel(session);
        let task = tokio::spawn(reauthenticate(conn, addr, credentials, tx, max_frame));
        Some(Reauthenticator { task, session: rx })
    }

    /// The session as of the last successful (re-)authentication.
    pub fn session(&self) -> Session {
        self.session.borrow().clone()
    }

    /// A receiver that sees every successful re-authentication.
    pub fn watch(&self) -> watch::Receiver<Session> {
        self.session.clone()
    }
}

impl Drop for Reauthenticator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reauthenticate(
    conn: quinn::Connection,
    addr: SocketAddr,
    credentials: SaslCredentials,
    session: watch::Sender<Session>,
    max_frame: usize,
) {
    let work = async {
        loop {
            let Some(lifetime) = session.borrow().lifetime else { return };
            let started = tokio::time::Instant::now();
            let ends = started + lifetime;
            tokio::time::sleep(reauthenticate_after(lifetime, rand::random::<f64>())).await;
            // Retry until the session ends; after that the broker closes the connection
            // and whoever owns it reconnects (with fresh credentials).
            loop {
                match once(&conn, addr, &credentials, max_frame).await {
                    Ok(next) => {
                        tracing::debug!(%addr, lifetime = ?next.lifetime, "re-authenticated");
                        session.send_replace(next);
                        break;
                    }
                    Err(e) => {
                        let left = ends.saturating_duration_since(tokio::time::Instant::now());
                        tracing::warn!(%addr, error = %e, ?left, "re-authentication failed");
                        if left.is_zero() {
                            return;
                        }
                        tokio::time::sleep((left / 4).max(RETRY_MIN).min(left)).await;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = conn.closed() => {}
    }
}

/// One re-authentication on a fresh stream, which is finished afterwards.
async fn once(
    conn: &quinn::Connection,
    addr: SocketAddr,
    credentials: &SaslCredentials,
    max_frame: usize,
) -> Result<Session, TransportError> {
    let (send, recv) = conn.open_bi().await.map_err(|e| TransportError::from_connection(addr, e))?;
    let mut stream = FrameStream::new(addr, send, recv, max_frame);
    let r = authenticate(&mut stream, addr, credentials).await;
    stream.finish();
    r
}
