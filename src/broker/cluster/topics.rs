//! Topics in cluster mode: created and grown in the metadata store, assigned by the
//! controller, then opened locally (every broker keeps a local log for each partition).

use std::sync::Arc;
use std::time::Duration;

use super::NodeInner;
use crate::broker::topics::{Topic, TopicError, TopicRegistry};
use crate::cluster::metadata::{ClusterView, MetaError, TopicSpec};
use crate::protocol::{validate_topic_name, ErrorCode};

/// How long topic creation waits for the controller to assign every partition.
const ASSIGN_WAIT: Duration = Duration::from_secs(30);

fn stale() -> TopicError {
    terr(
        ErrorCode::MetadataUnavailable,
        "this broker's view of the cluster metadata is not current (starting, or etcd unreachable); retry",
    )
}

fn terr(code: ErrorCode, message: impl Into<String>) -> TopicError {
    TopicError { code, message: message.into() }
}

impl NodeInner {
    /// Creates a topic in the metadata store, waits until the controller has given every
    /// partition a leader, and returns the local topic.
    pub(crate) async fn create_topic(
        &self,
        registry: &Arc<TopicRegistry>,
        name: &str,
        spec: TopicSpec,
        max_partitions: u32,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_topic_name(name).map_err(|m| terr(ErrorCode::InvalidTopicName, m))?;
        if spec.partitions == 0 || spec.partitions > max_partitions {
            return Err(terr(
                ErrorCode::InvalidPartitions,
                format!("partition count must be between 1 and {max_partitions}, got {}", spec.partitions),
            ));
        }
        let view = self.view();
        if view.stale_since.is_some() {
            return Err(stale());
        }
        let live = view.brokers.len();
        let rf = usize::from(spec.replication_factor);
        if rf == 0 || rf > live {
            return Err(terr(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor must be between 1 and the {live} live brokers, got {rf}"),
            ));
        }
        if spec.min_insync_replicas == 0 || spec.min_insync_replicas > spec.replication_factor {
            return Err(terr(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "min in-sync replicas must be between 1 and the replication factor {rf}, got {}",
                    spec.min_insync_replicas
                ),
            ));
        }
        match self.meta.create_topic(name, spec).await {
            Ok(_) => {}
            Err(MetaError::TopicExists(_)) => {
                return Err(terr(ErrorCode::TopicAlreadyExists, format!("topic '{name}' already exists")))
            }
            Err(e) => return Err(terr(ErrorCode::MetadataUnavailable, e.to_string())),
        }
        tracing::info!(topic = name, ?spec, "topic created in the cluster");
        self.local_topic(registry, name, spec.partitions).await
    }

    /// Raises a topic's partition count in the metadata store and waits for the new
    /// partitions' assignment.
    pub(crate) async fn add_partitions(
        &self,
        registry: &Arc<TopicRegistry>,
        name: &str,
        partitions: u32,
        max_partitions: u32,
    ) -> Result<Arc<Topic>, TopicError> {
        if partitions == 0 || partitions > max_partitions {
            return Err(terr(
                ErrorCode::InvalidPartitions,
                format!("partition count must be between 1 and {max_partitions}, got {partitions}"),
            ));
        }
        match self.meta.add_partitions(name, partitions).await {
            Ok(()) => {}
            Err(MetaError::UnknownTopic(_)) => {
                return Err(terr(ErrorCode::UnknownTopicOrPartition, format!("topic '{name}' does not exist")))
            }
            Err(e @ MetaError::PartitionsCannotShrink { .. }) => {
                return Err(terr(ErrorCode::InvalidPartitions, e.to_string()))
            }
            Err(e) => return Err(terr(ErrorCode::MetadataUnavailable, e.to_string())),
        }
        self.local_topic(registry, name, partitions).await
    }

    /// The local topic for a request: known to the cluster (waiting for its partitions'
    /// assignment if needed), or created with the defaults when `auto_create` allows.
    pub(crate) async fn topic_for_write(
        &self,
        registry: &Arc<TopicRegistry>,
        name: &str,
        auto_create: Option<TopicSpec>,
        max_partitions: u32,
    ) -> Result<Arc<Topic>, TopicError> {
        let view = self.view();
        let known = view.topics.get(name).map(|t| t.value.partitions);
        if known.is_none() && view.stale_since.is_some() {
            // Right after a start (or while etcd is unreachable) the view may not list
            // the topic yet: neither "unknown" nor a creation would be right.
            return Err(stale());
        }
        match (known, auto_create) {
            (Some(n), _) => self.local_topic(registry, name, n).await,
            (None, Some(spec)) => match self.create_topic(registry, name, spec, max_partitions).await {
                Err(e) if e.code == ErrorCode::TopicAlreadyExists => {
                    let n = self.wait_view(name, |v| v.topics.get(name).map(|t| t.value.partitions)).await?;
                    self.local_topic(registry, name, n).await
                }
                other => other,
            },
            (None, None) => Err(terr(ErrorCode::UnknownTopicOrPartition, format!("topic '{name}' does not exist"))),
        }
    }

    /// Waits until `f` finds something in the view.
    async fn wait_view<T>(&self, name: &str, f: impl Fn(&ClusterView) -> Option<T>) -> Result<T, TopicError> {
        let mut rx = self.view.clone();
        let deadline = tokio::time::Instant::now() + ASSIGN_WAIT;
        loop {
            if let Some(t) = f(&rx.borrow_and_update()) {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(terr(
                    ErrorCode::RequestTimedOut,
                    format!("topic '{name}': the controller has not assigned every partition yet; retry"),
                ));
            }
        }
    }

    /// Waits until every one of the topic's first `partitions` partitions has a leader,
    /// then opens the local topic with that many partitions.
    async fn local_topic(
        &self,
        registry: &Arc<TopicRegistry>,
        name: &str,
        partitions: u32,
    ) -> Result<Arc<Topic>, TopicError> {
        self.wait_view(name, |v| {
            let parts = v.partitions.get(name)?;
            (0..partitions).all(|p| parts.get(&p).is_some_and(|s| s.value.leader.is_some())).then_some(())
        })
        .await?;
        let (reg, n) = (registry.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || reg.ensure(&n, partitions))
            .await
            .unwrap_or_else(|e| Err(terr(ErrorCode::Unknown, format!("topic task failed: {e}"))))
    }
}
