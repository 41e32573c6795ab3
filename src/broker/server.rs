//! The listener: start-up (data directory lock, recovery, endpoint keys), the QUIC
//! endpoint with mandatory client certificates, the connection limit, retention, and
//! graceful shutdown. Each accepted connection is served by the `connection` module.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};

use super::acl::Acl;
use super::admission::Admission;
use super::auth::{BrokerAuth, ClientAuth};
use super::budget::BrokerBudget;
use super::cluster::schemas::SCHEMAS_NAMESPACE;
use super::config::BrokerConfig;
use super::connection::serve_connection;
use super::context::Shared;
use super::disk::{write_atomic, Syncer};
use super::metrics::{BrokerMetrics, MetricsSnapshot};
use super::producer_ids::ProducerIdAllocator;
use super::topics::TopicRegistry;
use crate::schema::registry::kv_store::KvRegistryStore;
use crate::schema::registry::{FileStore, Registry};
use crate::transport::certs::{load_certs, CertError, Identity};
use crate::transport::tls::{quinn_server_config, server_tls_with_client_auth, QuicTuning, TlsError};

/// Errors that stop a broker from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Certificates could not be loaded.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The data directory could not be prepared or recovered.
    #[error("data directory {path}: {reason}")]
    Storage {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The broker's TLS material: its own certificate and the CA that signs client certs.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    /// Broker certificate chain and key.
    pub identity: Identity,
    /// CA certificates accepted for client certificates.
    pub client_ca: Vec<CertificateDer<'static>>,
}

impl BrokerTls {
    /// Loads `ca.crt`, `broker.crt` and `broker.key` from a directory made by `qwire certs`.
    pub fn load(certs_dir: &Path) -> Result<BrokerTls, CertError> {
        Ok(BrokerTls {
            identity: Identity::load(certs_dir, "broker")?,
            client_ca: load_certs(&certs_dir.join("ca.crt"))?,
        })
    }
}

/// Re-reads a running broker's SASL users file and JWKS.
#[derive(Debug, Clone)]
pub struct CredentialsReloader {
    auth: Arc<BrokerAuth>,
}

impl CredentialsReloader {
    /// Reads the files again. New exchanges use them; established sessions are not cut
    /// (a removed user's session lasts until it expires, see `max_session_secs`). On error
    /// (a file that no longer parses) nothing changes and the error says why. Returns what
    /// was loaded.
    pub fn reload(&self) -> Result<String, String> {
        let r = self.auth.reload();
        match &r {
            Ok(what) => tracing::info!(loaded = %what, "SASL credentials reloaded"),
            Err(e) => tracing::error!(error = %e, "SASL credentials not reloaded; the previous ones stay in force"),
        }
        r
    }
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
    metrics: Arc<BrokerMetrics>,
    auth: Arc<BrokerAuth>,
    /// For exporters (`admin`): topics, partitions and producer ids while the broker runs.
    shared: std::sync::Weak<Shared>,
    schemas: Arc<Registry>,
    acl: Acl,
}

impl BrokerHandle {
    /// The address the broker listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A copy of the broker's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// What re-reads the SASL users file and the JWKS (what `qwire broker` does on SIGHUP).
    pub fn credentials(&self) -> CredentialsReloader {
        CredentialsReloader { auth: self.auth.clone() }
    }

    /// The schema registry this broker hosts.
    pub fn schema_registry(&self) -> Arc<Registry> {
        self.schemas.clone()
    }

    /// The schema registry's Confluent-compatible REST API, authorised by this broker's
    /// ACL: merge it at the root of the admin listener.
    pub fn schema_router(&self) -> axum::Router {
        super::schema_rest::router(self.schemas.clone(), self.acl.clone())
    }

    /// The live counters, for exporters that read them at scrape time.
    pub fn live_metrics(&self) -> Arc<BrokerMetrics> {
        self.metrics.clone()
    }

    /// The broker's state, for exporters that read it at scrape time (gone once the
    /// broker has stopped).
    pub(crate) fn shared(&self) -> std::sync::Weak<Shared> {
        self.shared.clone()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (up to the
    /// configured grace), fsync every partition, close the endpoint.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = self.done.await;
    }

    /// Waits until the broker has stopped (after [`BrokerHandle::shutdown`] from
    /// elsewhere, or a signal handled by the caller).
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown_tx.clone()
    }

    /// Waits for the broker task to end.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

fn lock_data_dir(dir: &Path) -> Result<fs::File, BrokerError> {
    let storage = |reason: String| BrokerError::Storage { path: dir.into(), reason };
    fs::create_dir_all(dir).map_err(|e| storage(e.to_string()))?;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .map_err(|e| storage(e.to_string()))?;
    f.try_lock().map_err(|_| storage("locked by another running broker".into()))?;
    Ok(f)
}

/// Starts a broker: recovers the data directory, binds the endpoint and serves until
/// shut down. Must be called inside a tokio runtime.
pub async fn start(config: BrokerConfig, tls: BrokerTls) -> Result<BrokerHandle, BrokerError> {
    config.validate().map_err(BrokerError::Config)?;
    let lock = lock_data_dir(&config.data_dir)?;
    let acl = match &config.acl_file {
        Some(p) => Acl::load(p).map_err(BrokerError::Config)?,
        None => Acl::allow_all(),
    };
    if acl.denies_everything() {
        tracing::warn!(acl = ?config.acl_file, "the ACL file has no [[allow]] rule: every request that needs a permission is denied");
    }
    let metrics = Arc::new(BrokerMetrics::default());
    let storage = |reason: String| BrokerError::Storage { path: config.data_dir.clone(), reason };
    // Recovery reads (and may fsync) every partition: on the blocking pool.
    let (registry, recovered) = {
        let (dir, partition_config, max) = (config.data_dir.clone(), config.partition_config(), config.max_partitions);
        let m = metrics.clone();
        tokio::task::spawn_blocking(move || TopicRegistry::open(&dir, partition_config, max, m))
            .await
            .map_err(|e| storage(format!("recovery task failed: {e}")))?
            .map_err(storage)?
    };
    let registry = registry.with_max_topics(config.max_topics as usize);
    for r in &recovered {
        if r.report.truncated_bytes > 0 {
            tracing::warn!(
                topic = %r.topic, partition = r.partition, truncated_bytes = r.report.truncated_bytes,
                reason = r.report.reason.as_deref().unwrap_or(""), "recovery truncated a torn tail"
            );
        }
    }
    let producer_ids =
        ProducerIdAllocator::open(&config.data_dir, config.max_producer_ids_per_principal, config.syncer.clone())
            .map_err(|e| storage(e.to_string()))?;

    let tuning = QuicTuning {
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        max_bidi_streams: config.max_streams_per_connection,
        ..QuicTuning::default()
    };
    let require_cert = config.auth.client_auth == ClientAuth::Required;
    let server_config =
        quinn_server_config(server_tls_with_client_auth(&tls.identity, &tls.client_ca, require_cert)?, &tuning)?;
    // Stateless resets are keyed by a secret kept in the data directory: after a crash and
    // restart, the broker's resets for connections it no longer knows are ones clients
    // recognise, so they reconnect at once instead of waiting out their idle timeout.
    let (reset_key, cid_key) = endpoint_keys(&config.data_dir).map_err(|e| storage(format!("reset key: {e}")))?;
    // The decoy salts of unknown SASL users come from the same persistent secret, so they
    // stay the same across restarts (a changing salt would give an unknown user away).
    let decoy_secret = ring::hmac::sign(&reset_key, b"qwire sasl decoy key");
    let auth = Arc::new(BrokerAuth::load(config.auth.clone(), decoy_secret.as_ref()).map_err(BrokerError::Config)?);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // Connection IDs are validated with a key too: with a per-process key the restarted
    // broker would drop the old connections' packets as invalid instead of resetting them.
    endpoint_config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    let socket =
        std::net::UdpSocket::bind(config.listen).map_err(|source| BrokerError::Bind { addr: config.listen, source })?;
    let runtime = quinn::default_runtime().ok_or_else(|| BrokerError::Config("no async runtime".into()))?;
    let endpoint = quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
        .map_err(|source| BrokerError::Bind { addr: config.listen, source })?;
    let local_addr = endpoint.local_addr().map_err(|source| BrokerError::Bind { addr: config.listen, source })?;

    let cluster = match config.cluster.clone() {
        Some(c) => Some(
            super::cluster::NodeInner::start(
                c,
                &config.data_dir,
                local_addr,
                &tls.identity,
                &tls.client_ca,
                config.batch_limit(),
            )
            .await
            .map_err(BrokerError::Config)?,
        ),
        None => None,
    };
    // The schema registry, replayed here from its event log: a single broker keeps it in
    // data_dir/schemas; a cluster's brokers share one log in the metadata store
    // (`kv/schemas/`), so every broker serves the same ids.
    let schemas = match &cluster {
        Some(node) => {
            let store = KvRegistryStore::new(node.meta.kv(SCHEMAS_NAMESPACE));
            Arc::new(Registry::open(Arc::new(store)).await.map_err(|e| {
                BrokerError::Config(format!("cannot read the schema registry from the metadata store: {e}"))
            })?)
        }
        None => {
            let dir = config.data_dir.join("schemas");
            let store = tokio::task::spawn_blocking(move || FileStore::open(&dir))
                .await
                .map_err(|e| storage(format!("schema registry recovery task failed: {e}")))?
                .map_err(|e| storage(e.to_string()))?;
            Arc::new(Registry::open(Arc::new(store)).await.map_err(|e| storage(e.to_string()))?)
        }
    };
    let registry = Arc::new(registry);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    if let Some(node) = &cluster {
        super::cluster::schemas::spawn_refresher(node, schemas.clone(), shutdown_rx.clone());
    }
    if let Some(node) = &cluster {
        node.run(registry.clone(), shutdown_rx.clone());
    }
    let response_budget = BrokerBudget::new(config.max_response_bytes, metrics.clone());
    let handle_acl = acl.clone();
    let shared = Arc::new(Shared {
        config,
        acl,
        auth: auth.clone(),
        registry,
        producer_ids,
        schemas: schemas.clone(),
        response_budget,
        metrics: metrics.clone(),
        local_addr,
        shutdown: shutdown_rx,
        cluster,
    });
    tokio::spawn(retention_loop(shared.clone()));
    let weak = Arc::downgrade(&shared);
    let done = tokio::spawn(accept_loop(endpoint, shared, lock));
    tracing::info!(%local_addr, "broker listening");
    Ok(BrokerHandle { local_addr, shutdown_tx, done, metrics, auth, shared: weak, schemas, acl: handle_acl })
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, _lock: fs::File) {
    let mut shutdown = shared.shutdown.clone();
    // Every connection task holds a clone; when all are gone, recv() yields None.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let admission = Admission::new(shared.config.max_connections, shared.config.max_handshakes, shared.metrics.clone());
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(incoming) = incoming else { break };
        if let Some((incoming, admitted)) = admission.admit(incoming) {
            tokio::spawn(serve_connection(incoming, admitted, shared.clone(), alive_tx.clone()));
        }
    }
    tracing::info!("shutting down: no new connections");
    if let Some(node) = &shared.cluster {
        // Leave first: the partitions this broker leads fail over now, not after the TTL.
        node.leave().await;
    }
    drop(alive_tx);
    let grace = Duration::from_millis(shared.config.shutdown_grace_ms);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!(?grace, "connections still busy after the grace period");
    }
    let flushing = shared.clone();
    let errors = tokio::task::spawn_blocking(move || flushing.registry.flush_all()).await.unwrap_or_default();
    for e in errors {
        tracing::error!(error = %e, "final fsync failed");
    }
    endpoint.close(0u8.into(), b"broker shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    tracing::info!("broker stopped");
}

/// The stateless-reset key (HMAC-SHA256) and the connection-ID validation key, both
/// derived from a 32-byte secret created on first start in `DATA_DIR/reset_key` (mode
/// 0600) and reused afterwards.
fn endpoint_keys(data_dir: &Path) -> std::io::Result<(ring::hmac::Key, u64)> {
    let path = data_dir.join("reset_key");
    let secret = match fs::read(&path) {
        Ok(s) if s.len() == 32 => s,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not 32 bytes", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut s = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
            write_atomic(&path, &s, 0o600, &Syncer::os())?;
            s
        }
        Err(e) => return Err(e),
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let tag = ring::hmac::sign(&key, b"qwire connection id key");
    let mut cid = [0u8; 8];
    cid.copy_from_slice(&tag.as_ref()[..8]);
    Ok((key, u64::from_le_bytes(cid)))
}

async fn retention_loop(shared: Arc<Shared>) {
    if shared.config.retention_bytes.is_none() && shared.config.retention_secs.is_none() {
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    let every = Duration::from_secs(shared.config.retention_check_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let deleted = shared.registry.apply_retention(now).await;
        if deleted > 0 {
            tracing::info!(deleted, "retention removed segments");
        }
    }
}
