//! What every request handler may use: the broker-wide [`Shared`] state and the
//! per-connection [`ConnCtx`].
//!
//! This module imports nothing from the listener or the request handlers, so both can
//! depend on it without a cycle.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{watch, Semaphore};

use super::acl::Acl;
use super::auth::{BrokerAuth, SessionState};
use super::budget::{BrokerBudget, ResponseBudget};
use super::cluster::NodeInner;
use super::config::BrokerConfig;
use super::metrics::BrokerMetrics;
use super::producer_ids::ProducerIdAllocator;
use super::topics::{Topic, TopicError, TopicRegistry};
use crate::auth::server::session::ConnectionAuth;
use crate::cluster::metadata::TopicSpec;
use crate::protocol::ErrorCode;
use crate::schema::Registry;

/// State shared by every connection of a broker.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) acl: Acl,
    pub(crate) auth: Arc<BrokerAuth>,
    pub(crate) registry: Arc<TopicRegistry>,
    pub(crate) producer_ids: ProducerIdAllocator,
    /// The schema registry this broker hosts (`data_dir/schemas`).
    pub(crate) schemas: Arc<Registry>,
    pub(crate) metrics: Arc<BrokerMetrics>,
    /// Bytes of responses waiting to be sent, over all connections.
    pub(crate) response_budget: BrokerBudget,
    pub(crate) local_addr: SocketAddr,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The cluster node in cluster mode; `None` for a single broker.
    pub(crate) cluster: Option<Arc<NodeInner>>,
}

impl Shared {
    /// The topic for a write: existing, or auto-created when enabled (off the async
    /// runtime: creating makes directories and files and fsyncs them).
    pub(crate) async fn topic_for_write(self: &Arc<Self>, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(node) = &self.cluster {
            let auto = self.config.auto_create_topics.then(|| self.default_spec(self.config.default_partitions));
            return node.topic_for_write(&self.registry, name, auto, self.config.max_partitions).await;
        }
        if let Some(t) = self.registry.get(name) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(TopicError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic '{name}' does not exist and auto-create is off"),
            });
        }
        let partitions = self.config.default_partitions;
        self.blocking(name, move |registry, name| registry.get_or_create(name, partitions)).await
    }

    /// Creates a topic (`CreateTopic`), off the async runtime.
    pub(crate) async fn create_topic(self: &Arc<Self>, name: &str, partitions: u32) -> Result<Arc<Topic>, TopicError> {
        if let Some(node) = &self.cluster {
            return node
                .create_topic(&self.registry, name, self.default_spec(partitions), self.config.max_partitions)
                .await;
        }
        self.blocking(name, move |registry, name| registry.create(name, partitions)).await
    }

    /// The settings of a topic created without a replication factor (plain `CreateTopic`,
    /// auto-creation) in cluster mode.
    pub(crate) fn default_spec(&self, partitions: u32) -> TopicSpec {
        let c = self.config.cluster.as_ref();
        TopicSpec {
            partitions,
            replication_factor: c.map_or(1, |c| c.default_replication_factor),
            min_insync_replicas: c.map_or(1, |c| c.default_min_insync_replicas),
        }
    }

    async fn blocking(
        self: &Arc<Self>,
        name: &str,
        f: impl FnOnce(&TopicRegistry, &str) -> Result<Arc<Topic>, TopicError> + Send + 'static,
    ) -> Result<Arc<Topic>, TopicError> {
        let me = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || f(&me.registry, &name)).await.unwrap_or_else(|e| {
            Err(TopicError { code: ErrorCode::Unknown, message: format!("topic creation task failed: {e}") })
        })
    }
}

/// A connection's principal: fixed by its client certificate, or set once by its first
/// successful SASL authentication (a re-authentication keeps it). Until then it reads as
/// the empty string, and `requests::dispatch` serves nothing but `Hello` and SASL.
#[derive(Debug, Default)]
pub(crate) struct Principal(OnceLock<Arc<str>>);

impl Principal {
    /// The principal of a certificate.
    pub(crate) fn fixed(p: &str) -> Principal {
        let me = Principal::default();
        let _ = me.0.set(Arc::from(p));
        me
    }

    /// Whether the connection has authenticated.
    pub(crate) fn is_set(&self) -> bool {
        self.0.get().is_some()
    }

    /// Sets the principal after a successful SASL authentication (no-op if already set:
    /// a re-authentication keeps the principal, which `ConnectionAuth` enforces).
    pub(crate) fn set(&self, p: &str) {
        let _ = self.0.set(Arc::from(p));
    }

    /// A shared copy (empty if unset).
    pub(crate) fn arc(&self) -> Arc<str> {
        self.0.get().cloned().unwrap_or_else(|| Arc::from(""))
    }
}

impl Deref for Principal {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.get().map_or("", |p| p)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

/// Per-connection context handed to stream handlers.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) principal: Principal,
    /// The connection's `connection` span (its `principal` field is recorded when a
    /// certificate-less connection authenticates).
    pub(crate) span: tracing::Span,
    /// The connection's authentication state machine (certificate, or SASL exchanges,
    /// re-authentication and expiry).
    pub(crate) auth: Arc<Mutex<ConnectionAuth>>,
    /// Where a certificate-less connection's session stands, for its watcher.
    pub(crate) session: watch::Sender<SessionState>,
    pub(crate) remote: SocketAddr,
    /// Bytes of partly received large frames this connection may still buffer
    /// ([`BrokerConfig::max_buffered_bytes_per_connection`]).
    pub(crate) frame_budget: Arc<Semaphore>,
    /// Bytes of responses this connection may have waiting to be sent
    /// ([`BrokerConfig::max_response_bytes_per_connection`]).
    pub(crate) responses: ResponseBudget,
}
