//! The admin listener's accept loop: TCP, then (by default) a TLS 1.3 handshake that
//! requires a client certificate from the broker's CA, then HTTP/1.1 or HTTP/2 served by
//! the current router with the [`Caller`] in every request's extensions.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::caller::Caller;
use crate::transport::certs::principal_of;

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
}

/// Serves until `shutdown` turns true, then lets open requests finish (up to the grace).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Arc<ArcSwap<Router>>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%remote, max = limits.max_connections, "admin listener: connection limit reached; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, routes, http, watcher) = (tls.clone(), routes.clone(), http.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(acceptor) = tls else {
                serve_io(&http, tcp, Caller { principal: None, remote }, routes, watcher).await;
                return;
            };
            let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, error = %e, "admin listener: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, "admin listener: TLS handshake timed out");
                    return;
                }
            };
            let principal = match peer_principal(stream.get_ref().1.peer_certificates()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "admin listener: client certificate has no usable principal");
                    return;
                }
            };
            let caller = Caller { principal: Some(Arc::from(principal)), remote };
            serve_io(&http, stream, caller, routes, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?limits.shutdown_grace, "admin listener: requests still open after the grace period");
    }
}

async fn serve_io<I>(
    http: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    io: I,
    caller: Caller,
    routes: Arc<ArcSwap<Router>>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = caller.remote;
    let conn = http.serve_connection(TokioIo::new(io), service(caller, routes)).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, error = %e, "admin connection ended with an error");
    }
}

/// The per-connection service: stamps the caller on the request and hands it to the
/// router current at that moment (routers mounted after start are seen at once).
fn service(
    caller: Caller,
    routes: Arc<ArcSwap<Router>>,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(caller.clone());
        let router = Router::clone(&routes.load());
        router.oneshot(req)
    });
    hyper_util::service::TowerToHyperService::new(svc)
}

fn peer_principal(certs: Option<&[CertificateDer<'static>]>) -> Result<String, crate::transport::certs::CertError> {
    let leaf = certs.and_then(|c| c.first()).ok_or(crate::transport::certs::CertError::NoPrincipal)?;
    principal_of(leaf)
}
