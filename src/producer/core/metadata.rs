//! The topic table and metadata: which topics the producer knows, their partitions, the
//! state of each partition (queue remainder, linger clock, in-flight window, route), and
//! the metadata requests that fill it in and keep it fresh.

use std::collections::HashMap;
use std::sync::Arc;

use super::batches::BatchPayload;
use super::window::Window;
use super::{ControlKind, Core, MetadataReply, Outcome, Tick};
use crate::producer::accumulator::{PartitionQueue, QueuedRecord, TopicQueues};
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::protocol::frame::{Metadata, MetadataOk};
use crate::protocol::{ErrorCode, Payload};
use crate::transport::TransportError;

/// One partition as the core keeps it.
pub(crate) struct PartState {
    /// Sealed batches not yet acknowledged or failed.
    pub window: Window<BatchPayload>,
    /// A record popped but not fitting the previous batch.
    pub carry: Option<QueuedRecord>,
    /// When the core first saw data waiting (linger starts).
    pub since: Option<Tick>,
    /// In the active list.
    pub active: bool,
    /// Global data stream index (fixed for the partition's life).
    pub stream: usize,
    /// The link its batches go to.
    pub link: usize,
}

/// One topic.
pub(crate) struct TopicState {
    /// The queues shared with the handles.
    pub queues: Arc<TopicQueues>,
    /// Its partitions.
    pub parts: Vec<PartState>,
}

/// Every known topic, and the metadata still wanted.
#[derive(Default)]
pub(crate) struct Topics {
    /// Topics by index (the index is `TopicQueues::id`).
    pub list: Vec<TopicState>,
    /// Index by name.
    pub ids: HashMap<Arc<str>, u32>,
    /// Partitions with queued records: (topic, partition).
    pub active: Vec<(u32, u32)>,
    /// Handles waiting for a topic's metadata.
    pub waiters: HashMap<Arc<str>, Vec<MetadataReply>>,
    /// Next periodic refresh.
    pub refresh_due: Option<Tick>,
}

impl Topics {
    /// Takes every waiting reply (the producer is stopping).
    pub(crate) fn take_waiters(&mut self) -> Vec<MetadataReply> {
        self.waiters.drain().flat_map(|(_, v)| v).collect()
    }
}

impl Core {
    pub(crate) fn want_metadata(&mut self, now: Tick, topic: Arc<str>, reply: Option<MetadataReply>) {
        if let Some(&tid) = self.topics.ids.get(&topic) {
            if let Some(reply) = reply {
                let result = Ok(self.topics.list[tid as usize].queues.clone());
                self.outcomes.push_back(Outcome::Metadata { reply, result });
            }
            return;
        }
        let fatal = self.fatal.clone().or_else(|| self.links.list.iter().find_map(|l| l.refused.clone()));
        if let Some(e) = fatal {
            if let Some(reply) = reply {
                self.outcomes.push_back(Outcome::Metadata { reply, result: Err(e) });
            }
            return;
        }
        let first = !self.topics.waiters.contains_key(&topic);
        let waiters = self.topics.waiters.entry(topic.clone()).or_default();
        waiters.extend(reply);
        if first {
            self.call(
                now,
                None,
                Payload::Metadata(Metadata { topics: vec![topic.to_string()] }),
                ControlKind::Metadata(vec![topic], 0),
            );
        }
    }

    /// Asks for the topics that handles wait for and no request covers (after a connect).
    pub(crate) fn request_pending_metadata(&mut self, now: Tick) {
        let pending: Vec<Arc<str>> = self
            .topics
            .waiters
            .keys()
            .filter(|t| {
                !self.control.values().any(|c| matches!(&c.kind, ControlKind::Metadata(ts, _) if ts.contains(t)))
            })
            .cloned()
            .collect();
        if !pending.is_empty() {
            let topics = pending.iter().map(|t| t.to_string()).collect();
            self.call(now, None, Payload::Metadata(Metadata { topics }), ControlKind::Metadata(pending, 0));
        }
    }

    /// Periodic refresh: picks up partitions added to known topics.
    pub(crate) fn refresh_metadata(&mut self, now: Tick) {
        let due = *self.topics.refresh_due.get_or_insert(now + self.cfg.metadata_max_age);
        if now < due || self.topics.list.is_empty() {
            return;
        }
        self.topics.refresh_due = Some(now + self.cfg.metadata_max_age);
        let names: Vec<Arc<str>> = self.topics.list.iter().map(|t| t.queues.name.clone()).collect();
        let topics = names.iter().map(|t| t.to_string()).collect();
        self.call(now, None, Payload::Metadata(Metadata { topics }), ControlKind::Metadata(names, 0));
    }

    pub(crate) fn on_metadata_answer(
        &mut self,
        now: Tick,
        topics: Vec<Arc<str>>,
        link: usize,
        result: Result<Payload, TransportError>,
    ) {
        match result {
            Ok(Payload::MetadataOk(m)) => self.on_metadata(now, m, link),
            Ok(other) => tracing::warn!(kind = ?other.kind(), "unexpected metadata answer"),
            Err(e) => {
                tracing::warn!(error = %e, "metadata request failed; will retry on the next connection");
                if !e.is_retriable() {
                    let err = ProduceError::transport(e, Persistence::NotPersisted);
                    for t in topics {
                        for reply in self.topics.waiters.remove(&t).unwrap_or_default() {
                            self.outcomes.push_back(Outcome::Metadata { reply, result: Err(err.clone()) });
                        }
                    }
                }
            }
        }
    }

    fn on_metadata(&mut self, now: Tick, m: MetadataOk, answered_by: usize) {
        let _ = now;
        for t in m.topics {
            let name: Arc<str> = Arc::from(t.name.as_str());
            let waiters = self.topics.waiters.remove(&name).unwrap_or_default();
            if t.error != ErrorCode::None {
                let msg = match t.error {
                    ErrorCode::UnknownTopicOrPartition => format!("topic '{name}' does not exist"),
                    ErrorCode::AuthorizationFailed => format!("not authorized for topic '{name}'"),
                    c => format!("topic '{name}': {c}"),
                };
                let err = ProduceError::new(ErrorKind::Broker(t.error), Persistence::NotPersisted, msg);
                for reply in waiters {
                    self.outcomes.push_back(Outcome::Metadata { reply, result: Err(err.clone()) });
                }
                continue;
            }
            let leader = t.partitions.first().map(|p| p.leader);
            // The link connected to the leader; failing that, the link that answered.
            let link = leader.and_then(|id| self.links.of_broker(id)).unwrap_or(answered_by);
            let count = t.partitions.len() as u32;
            let tid = match self.topics.ids.get(&name) {
                Some(&tid) => {
                    let have = self.topics.list[tid as usize].parts.len() as u32;
                    if count > have {
                        self.extend_topic(tid, count, link);
                    }
                    tid
                }
                None => self.add_topic(name.clone(), count, link),
            };
            let queues = self.topics.list[tid as usize].queues.clone();
            for reply in waiters {
                self.outcomes.push_back(Outcome::Metadata { reply, result: Ok(queues.clone()) });
            }
        }
    }

    fn new_part(&self, tid: u32, p: u32, link: usize) -> PartState {
        let streams = self.links.connections_per_broker() * self.links.streams_per_connection();
        // Spread partitions over streams; a partition keeps its stream for life.
        let g = (tid as usize).wrapping_mul(7919).wrapping_add(p as usize) % streams;
        PartState {
            window: Window::new(self.cfg.idempotence, self.cfg.max_in_flight),
            carry: None,
            since: None,
            active: false,
            stream: g,
            link,
        }
    }

    fn add_topic(&mut self, name: Arc<str>, count: u32, link: usize) -> u32 {
        let tid = self.topics.list.len() as u32;
        let queues = Arc::new(TopicQueues {
            id: tid,
            name: name.clone(),
            partitions: (0..count).map(|_| Arc::new(PartitionQueue::default())).collect(),
        });
        let parts = (0..count).map(|p| self.new_part(tid, p, link)).collect();
        self.topics.list.push(TopicState { queues: queues.clone(), parts });
        self.topics.ids.insert(name, tid);
        self.acc.publish(queues);
        tid
    }

    fn extend_topic(&mut self, tid: u32, count: u32, link: usize) {
        let t = &self.topics.list[tid as usize];
        let mut partitions = t.queues.partitions.clone();
        let have = partitions.len() as u32;
        partitions.extend((have..count).map(|_| Arc::new(PartitionQueue::default())));
        let queues = Arc::new(TopicQueues { id: tid, name: t.queues.name.clone(), partitions });
        let new_parts: Vec<PartState> = (have..count).map(|p| self.new_part(tid, p, link)).collect();
        let t = &mut self.topics.list[tid as usize];
        t.parts.extend(new_parts);
        t.queues = queues.clone();
        self.acc.publish(queues);
        tracing::info!(topic = %t.queues.name, from = have, to = count, "partitions added");
    }
}
