//! What every request handler may use: the broker-wide [`Shared`] state and the
//! per-connection [`ConnCtx`].
//!
//! This module imports nothing from the listener or the request handlers, so both can
//! depend on it without a cycle.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::acl::Acl;
use super::config::BrokerConfig;
use super::metrics::BrokerMetrics;
use super::producer_ids::ProducerIdAllocator;
use super::topics::{Topic, TopicError, TopicRegistry};
use crate::protocol::ErrorCode;

/// State shared by every connection of a broker.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) acl: Acl,
    pub(crate) registry: TopicRegistry,
    pub(crate) producer_ids: ProducerIdAllocator,
    pub(crate) metrics: Arc<BrokerMetrics>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// The topic for a produce: existing, or auto-created when enabled.
    pub(crate) fn topic_for_write(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.registry.get(name) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(TopicError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("topic '{name}' does not exist and auto-create is off"),
            });
        }
        self.registry.get_or_create(name, self.config.default_partitions)
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
}
