//! What every request handler may use: the broker-wide [`Shared`] state and the
//! per-connection [`ConnCtx`].
//!
//! This module imports nothing from the listener or the request handlers, so both can
//! depend on it without a cycle.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::acl::Acl;
use super::budget::{BrokerBudget, ResponseBudget};
use super::cluster::NodeInner;
use super::config::BrokerConfig;
use super::metrics::BrokerMetrics;
use super::producer_ids::ProducerIdAllocator;
use super::topics::{Topic, TopicError, TopicRegistry};
use crate::cluster::metadata::TopicSpec;
use crate::protocol::ErrorCode;

/// State shared by every connection of a broker.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) acl: Acl,
    pub(crate) registry: Arc<TopicRegistry>,
    pub(crate) producer_ids: ProducerIdAllocator,
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

/// Per-connection context handed to stream handlers.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) principal: Arc<str>,
    pub(crate) remote: SocketAddr,
    /// Bytes of partly received large frames this connection may still buffer
    /// ([`BrokerConfig::max_buffered_bytes_per_connection`]).
    pub(crate) frame_budget: Arc<Semaphore>,
    /// Bytes of responses this connection may have waiting to be sent
    /// ([`BrokerConfig::max_response_bytes_per_connection`]).
    pub(crate) responses: ResponseBudget,
}
