//! The broker's admin HTTP listener (`qwire broker --http ADDR`): `GET /health`,
//! `GET /ready`, `GET /metrics`, and routers that other parts of the broker mount on it.
//!
//! - **HTTPS with client certificates by default.** The listener presents the broker
//!   certificate and requires a client certificate that chains to the broker's client CA
//!   (the same CA as for QUIC), so Prometheus scrapes with a `tls_config` that presents
//!   one. [`AdminTls::Plaintext`] serves plain HTTP for development and is refused on any
//!   address that is not loopback.
//! - **Who is calling.** Every request carries a [`Caller`]: the client certificate's
//!   principal, derived as the QUIC listener derives it, and the remote address. Handlers
//!   take [`Caller`] or [`Principal`] (401 without a certificate) as extractors.
//! - **Readiness** is a set of named [`Condition`]s ([`Readiness`]); `/ready` is 200 only
//!   when all are met. The broker start-up owns [`readiness::STORAGE_RECOVERED`] and
//!   [`readiness::ACCEPTING_CONNECTIONS`] ([`AdminHandle::broker_started`]); others add
//!   theirs with [`Readiness::condition`].
//! - **Metrics**: [`MetricsRegistry`] (prometheus-client) rendered as Prometheus text;
//!   the broker's counters are exported by a collector once a broker is attached.
//! - **Mounting**: [`Admin::merge`] / [`Admin::nest`] before start, or
//!   [`AdminHandle::merge`] / [`AdminHandle::nest`] after (a router whose state exists
//!   only once the broker runs).
//!
//! The listener starts *before* the broker so that `/ready` answers 503 while the data
//! directory is being recovered:
//!
//! ```no_run
//! # async fn f(cfg: qwire::broker::BrokerConfig, tls: qwire::broker::BrokerTls) -> Result<(), Box<dyn std::error::Error>> {
//! use qwire::broker::admin::{Admin, AdminConfig, AdminTls};
//! let admin = Admin::new(AdminConfig::new("127.0.0.1:9464".parse()?, AdminTls::Mtls(tls.clone()))).start().await?;
//! let broker = qwire::broker::start(cfg, tls).await?; // recovery runs here; /ready is 503
//! admin.broker_started(&broker); // /ready is 200, /metrics exports the broker's counters
//! # Ok(()) }
//! ```

pub mod caller;
mod listener;
pub mod metrics;
pub mod readiness;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use tokio::sync::watch;

pub use caller::{Caller, Principal};
pub use metrics::MetricsRegistry;
pub use readiness::{Condition, Readiness, ReadinessReport};

use super::server::{BrokerHandle, BrokerTls};
use crate::transport::tls::{server_tls, TlsError};

/// Default most concurrent admin connections; more are closed at once. Scrapers, probes
/// and registry clients need a handful; the bound keeps a misbehaving client from
/// holding file descriptors without limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time a client has to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time open requests get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the admin listener secures its connections.
#[derive(Debug, Clone)]
pub enum AdminTls {
    /// HTTPS (TLS 1.3) with the broker certificate; a client certificate signed by the
    /// broker's client CA is required. The default for `qwire broker --http`.
    Mtls(BrokerTls),
    /// Plain HTTP, no authentication: for development on loopback only (refused on any
    /// other address). Requests carry no principal.
    Plaintext,
}

/// Admin listener settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// TCP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// HTTPS with client certificates, or plaintext on loopback.
    pub tls: AdminTls,
    /// Most concurrent connections. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// TLS handshake deadline. Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// Request header deadline (HTTP/1). Default [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// Grace for open requests at shutdown. Default [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl AdminConfig {
    /// Settings with every default but the address and TLS mode.
    pub fn new(listen: SocketAddr, tls: AdminTls) -> AdminConfig {
        AdminConfig {
            listen,
            tls,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Errors that stop the admin listener from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Plaintext was asked for on an address other than loopback.
    #[error("plaintext admin HTTP is only allowed on a loopback address, not {0}; use HTTPS (the default)")]
    PlaintextNotLoopback(SocketAddr),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The TCP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The admin listener before it starts: add routers, readiness conditions and metrics.
#[derive(Debug)]
pub struct Admin {
    config: AdminConfig,
    readiness: Readiness,
    metrics: MetricsRegistry,
    router: Router,
    broker: metrics::BrokerCollector,
    storage_recovered: Condition,
    accepting: Condition,
}

impl Admin {
    /// A listener with the built-in endpoints, the broker's two readiness conditions
    /// (unmet) and the broker collector registered.
    pub fn new(config: AdminConfig) -> Admin {
        let readiness = Readiness::new();
        let storage_recovered = readiness.condition(readiness::STORAGE_RECOVERED);
        let accepting = readiness.condition(readiness::ACCEPTING_CONNECTIONS);
        let metrics = MetricsRegistry::default();
        let broker = metrics::BrokerCollector::default();
        metrics.register_collector(broker.clone());
        let router = routes::builtin(readiness.clone(), metrics.clone());
        Admin { config, readiness, metrics, router, broker, storage_recovered, accepting }
    }

    /// The readiness conditions (add yours with [`Readiness::condition`]).
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The metrics registry `/metrics` renders.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Adds a router's routes at their own paths (state already applied with
    /// `with_state`). Panics, like [`Router::merge`], if a path is already routed.
    pub fn merge(mut self, router: Router) -> Admin {
        self.router = self.router.merge(router);
        self
    }

    /// Mounts a router under a path prefix (e.g. `/schemas-api`). Panics, like
    /// [`Router::nest`], if the prefix overlaps existing routes.
    pub fn nest(mut self, prefix: &str, router: Router) -> Admin {
        self.router = self.router.nest(prefix, router);
        self
    }

    /// Binds the address and serves until [`AdminHandle::shutdown`] (or the handle is
    /// dropped). Must be called inside a tokio runtime.
    pub async fn start(self) -> Result<AdminHandle, AdminError> {
        let acceptor = match &self.config.tls {
            AdminTls::Plaintext if !self.config.listen.ip().is_loopback() => {
                return Err(AdminError::PlaintextNotLoopback(self.config.listen));
            }
            AdminTls::Plaintext => None,
            AdminTls::Mtls(tls) => {
                let mut cfg = server_tls(&tls.identity, &tls.client_ca)?;
                cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
            }
        };
        let addr = self.config.listen;
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        let local_addr = tcp.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        let routes = Arc::new(ArcSwap::from_pointee(self.router));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let limits = listener::Limits {
            max_connections: self.config.max_connections.max(1),
            handshake_timeout: self.config.handshake_timeout,
            header_read_timeout: self.config.header_read_timeout,
            shutdown_grace: self.config.shutdown_grace,
        };
        let done = tokio::spawn(listener::serve(tcp, acceptor, routes.clone(), limits, shutdown_rx));
        let scheme = if matches!(self.config.tls, AdminTls::Plaintext) { "http" } else { "https" };
        tracing::info!(%local_addr, scheme, "admin listener serving /health, /ready, /metrics");
        Ok(AdminHandle {
            local_addr,
            readiness: self.readiness,
            metrics: self.metrics,
            routes,
            broker: self.broker,
            storage_recovered: self.storage_recovered,
            accepting: self.accepting,
            shutdown_tx,
            done: Some(done),
        })
    }
}

/// A running admin listener. Dropping it stops the listener.
#[derive(Debug)]
pub struct AdminHandle {
    local_addr: SocketAddr,
    readiness: Readiness,
    metrics: MetricsRegistry,
    routes: Arc<ArcSwap<Router>>,
    broker: metrics::BrokerCollector,
    storage_recovered: Condition,
    accepting: Condition,
    shutdown_tx: watch::Sender<bool>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl AdminHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The readiness conditions.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The metrics registry `/metrics` renders.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Adds a router's routes while serving; requests see them at once. Panics, like
    /// [`Router::merge`], if a path is already routed.
    pub fn merge(&self, router: Router) {
        self.routes.rcu(|current| Router::clone(current).merge(router.clone()));
    }

    /// Mounts a router under a path prefix while serving. Panics, like [`Router::nest`],
    /// if the prefix overlaps existing routes.
    pub fn nest(&self, prefix: &str, router: Router) {
        self.routes.rcu(|current| Router::clone(current).nest(prefix, router.clone()));
    }

    /// Call once [`crate::broker::start`] has returned: marks storage recovered and
    /// connections accepted (until the broker's shutdown begins, which turns
    /// `accepting_connections` false again) and exports the broker's counters. A cluster
    /// broker adds the condition `cluster_view_current` (see CLUSTER.md).
    pub fn broker_started(&self, broker: &BrokerHandle) {
        self.broker.attach(broker);
        self.storage_recovered.set(true);
        self.accepting.set(true);
        let accepting = self.accepting.clone();
        let mut stopping = broker.shutdown_sender().subscribe();
        tokio::spawn(async move {
            // Err: the broker is gone without a shutdown signal; it accepts nothing either.
            let _ = stopping.wait_for(|s| *s).await;
            accepting.set(false);
        });
        // A cluster broker is ready while it has a current view of the cluster: the view
        // watch is live (not stale after a metadata store failure), its session holds, and
        // the view lists it under that session.
        if let Some(node) = broker.shared().upgrade().and_then(|s| s.cluster.clone()) {
            let current = self.readiness.condition(readiness::CLUSTER_VIEW_CURRENT);
            let weak = Arc::downgrade(&node);
            drop(node);
            let mut stopping = broker.shutdown_sender().subscribe();
            tokio::spawn(async move {
                loop {
                    match weak.upgrade() {
                        Some(node) => current.set(node.view_current()),
                        None => break,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                        _ = stopping.wait_for(|s| *s) => break,
                    }
                }
                current.set(false);
            });
        }
    }

    /// Stops accepting, lets open requests finish (up to the grace) and waits.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}
