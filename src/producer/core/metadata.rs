//! The topic table and metadata: which topics the producer knows, their partitions, the
//! state of each partition (queue remainder, linger clock, in-flight window, leader), and
//! the metadata requests that fill it in and keep it fresh.
//!
//! Each partition is sent to its own leader's broker, as the latest metadata says; a
//! periodic refresh (and a refresh soon after an answer that says the metadata is stale)
//! moves partitions whose leader changed. A broker named as a leader that the producer has
//! no link to gets one (from the broker list of the metadata answer).
//!
//! Metadata wanted by handles is asked for in one request per round; a retriable failure
//! is retried after a back-off; at most [`MAX_PENDING_TOPICS`] unknown topics are pending.

use std::collections::HashMap;
use std::sync::Arc;

use super::batches::BatchPayload;
use super::window::Window;
use super::{ControlKind, Core, MetadataReply, Outcome, Tick};
use crate::producer::accumulator::{Accumulator, PartitionQueue, QueuedRecord, TopicQueues};
use crate::producer::clock::later;
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::protocol::cluster::NotLeader;
use crate::protocol::frame::{Metadata, MetadataOk};
use crate::protocol::{ErrorCode, Payload};
use crate::transport::TransportError;

pub(crate) use crate::producer::accumulator::MAX_PENDING_TOPICS;

/// One partition as the core keeps it.
pub(crate) struct PartState {
    /// Sealed batches not yet acknowledged or failed.
    pub window: Window<BatchPayload>,
    /// A record popped but not fitting the previous batch (the last one popped).
    pub carry: Option<QueuedRecord>,
    /// Records taken from the queue so far: the next one taken is number `popped` (flush
    /// points count in these numbers).
    pub popped: u64,
    /// When the linger clock started (first record seen, or the last seal).
    pub since: Option<Tick>,
    /// No record still queued was enqueued before this (for the delivery timeout).
    pub oldest: Option<Tick>,
    /// In the active list.
    pub active: bool,
    /// Global data stream index (fixed for the partition's life).
    pub stream: usize,
    /// The leader's broker id, per the latest metadata.
    pub leader: Option<u32>,
    /// The link to use while no link is known for the leader (the one that answered).
    pub fallback_link: usize,
    /// Its broker said it does not lead it (or does not know it): nothing more is sent
    /// until the next metadata answer for its topic says where it went.
    pub stale_leader: bool,
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
    /// Topics wanted and not known yet, with the handles waiting for them.
    pub waiters: HashMap<Arc<str>, Vec<MetadataReply>>,
    /// Next periodic refresh.
    pub refresh_due: Option<Tick>,
    /// Not before this may wanted topics be asked for again (after a failure).
    retry_at: Option<Tick>,
    /// Broker id → `host:port`, from the latest metadata answer.
    brokers: HashMap<u32, String>,
}

impl Topics {
    /// When wanted topics may be asked for again after a failure, if any are waiting.
    pub(crate) fn retry_due(&self) -> Option<Tick> {
        self.retry_at.filter(|_| !self.waiters.is_empty())
    }

    /// Takes every waiting reply (the producer is stopping, or no broker is left).
    pub(crate) fn take_waiters(&mut self, acc: &Accumulator) -> Vec<MetadataReply> {
        acc.metadata_settled_all();
        self.waiters.drain().flat_map(|(_, v)| v).collect()
    }

    /// Takes the replies waiting for `topic`.
    fn take_topic(&mut self, topic: &str, acc: &Accumulator) -> Vec<MetadataReply> {
        acc.metadata_settled(topic);
        self.waiters.remove(topic).unwrap_or_default()
    }
}

impl Core {
    /// The link partition `part`'s batches go to now: its leader's (an open one first),
    /// else the link that answered the metadata.
    pub(crate) fn route(&self, part: &PartState) -> usize {
        part.leader.and_then(|id| self.links.of_broker(id)).unwrap_or(part.fallback_link)
    }

    pub(crate) fn want_metadata(&mut self, now: Tick, topic: Arc<str>, reply: Option<MetadataReply>) {
        if let Some(&tid) = self.topics.ids.get(&topic) {
            self.acc.metadata_settled(&topic);
            if let Some(reply) = reply {
                let result = Ok(self.topics.list[tid as usize].queues.clone());
                self.outcomes.push_back(Outcome::Metadata { reply, result });
            }
            return;
        }
        // Fail at once only when no broker may answer (the rule `fail_link_pending` follows).
        let fatal = self.fatal.clone().or_else(|| self.no_link_left(now));
        if let Some(e) = fatal {
            self.acc.metadata_settled(&topic);
            if let Some(reply) = reply {
                self.outcomes.push_back(Outcome::Metadata { reply, result: Err(e) });
            }
            return;
        }
        let full = self.topics.waiters.len() >= MAX_PENDING_TOPICS;
        match self.topics.waiters.get_mut(&topic) {
            Some(waiters) => {
                // Handles that stopped waiting (max_block) leave closed replies behind.
                waiters.retain(|r| !r.is_closed());
                waiters.extend(reply);
            }
            None if full => {
                self.acc.metadata_settled(&topic);
                if let Some(reply) = reply {
                    let msg = format!("{MAX_PENDING_TOPICS} topics are already waiting for metadata; '{topic}' is not");
                    let err = ProduceError::new(ErrorKind::BufferFull, Persistence::NotPersisted, msg);
                    self.outcomes.push_back(Outcome::Metadata { reply, result: Err(err) });
                }
            }
            None => {
                self.topics.waiters.insert(topic, reply.into_iter().collect());
            }
        }
    }

    /// Asks, in one request, for the wanted topics no request covers.
    pub(crate) fn request_pending_metadata(&mut self, now: Tick) {
        if self.topics.retry_at.is_some_and(|t| now < t) {
            return;
        }
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

    /// A refresh of every known topic at the next opportunity (the metadata is stale).
    pub(crate) fn refresh_soon(&mut self, now: Tick) {
        let soon = later(now, self.cfg.retry_backoff.base);
        self.topics.refresh_due = Some(self.topics.refresh_due.map_or(soon, |d| d.min(soon)));
    }

    /// Periodic refresh (and asks for what handles wait for).
    pub(crate) fn refresh_metadata(&mut self, now: Tick) {
        self.request_pending_metadata(now);
        let due = *self.topics.refresh_due.get_or_insert(later(now, self.cfg.metadata_max_age));
        if now < due || self.topics.list.is_empty() {
            return;
        }
        let names: Vec<Arc<str>> = self.topics.list.iter().map(|t| t.queues.name.clone()).collect();
        let topics = names.iter().map(|t| t.to_string()).collect();
        if self.call(now, None, Payload::Metadata(Metadata { topics }), ControlKind::Metadata(names, 0)) {
            self.topics.refresh_due = Some(later(now, self.cfg.metadata_max_age));
        }
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
            Ok(other) => {
                tracing::warn!(kind = ?other.kind(), "unexpected metadata answer; asking again");
                self.metadata_failed(now);
            }
            Err(e) if e.is_retriable() => {
                tracing::warn!(error = %e, "metadata request failed; asking again");
                self.metadata_failed(now);
            }
            Err(e) => {
                let err = ProduceError::transport(e, Persistence::NotPersisted);
                for t in topics {
                    for reply in self.topics.take_topic(&t, &self.acc) {
                        self.outcomes.push_back(Outcome::Metadata { reply, result: Err(err.clone()) });
                    }
                }
            }
        }
    }

    fn metadata_failed(&mut self, now: Tick) {
        let unit = self.jitter();
        self.topics.retry_at = Some(later(now, self.cfg.retry_backoff.delay(1, unit)));
        if !self.topics.list.is_empty() {
            self.refresh_soon(now);
        }
    }

    fn on_metadata(&mut self, now: Tick, m: MetadataOk, answered_by: usize) {
        for b in &m.brokers {
            self.topics.brokers.insert(b.id, format!("{}:{}", b.host, b.port));
        }
        for t in m.topics {
            let name: Arc<str> = Arc::from(t.name.as_str());
            let waiters = self.topics.take_topic(&name, &self.acc);
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
                // No leader to wait for: its batches go on (and get the broker's answer).
                if let Some(&tid) = self.topics.ids.get(&name) {
                    for part in &mut self.topics.list[tid as usize].parts {
                        part.stale_leader = false;
                    }
                }
                continue;
            }
            let count = t.partitions.len() as u32;
            let tid = match self.topics.ids.get(&name) {
                Some(&tid) => {
                    let have = self.topics.list[tid as usize].parts.len() as u32;
                    if count > have {
                        self.extend_topic(tid, count, answered_by);
                    }
                    tid
                }
                None => self.add_topic(name.clone(), count, answered_by),
            };
            for pm in &t.partitions {
                self.set_leader(now, tid as usize, pm.partition as usize, pm.leader, answered_by);
            }
            let queues = self.topics.list[tid as usize].queues.clone();
            for reply in waiters {
                self.outcomes.push_back(Outcome::Metadata { reply, result: Ok(queues.clone()) });
            }
        }
    }

    /// A broker answered `NotLeader` for partition `p` of topic `t` (a cluster's leader
    /// changed): go to the leader it names at once, when it names one (Kafka's KIP-951),
    /// and refresh the metadata soon either way.
    pub(crate) fn on_not_leader(&mut self, now: Tick, t: usize, p: usize, n: &NotLeader) {
        if n.leader >= 0 && !n.host.is_empty() {
            let leader = n.leader as u32;
            let address = if n.host.contains(':') {
                format!("[{}]:{}", n.host, n.port)
            } else {
                format!("{}:{}", n.host, n.port)
            };
            self.topics.brokers.insert(leader, address);
            let Some(part) = self.topics.list.get(t).and_then(|t| t.parts.get(p)) else { return };
            let fallback = part.fallback_link;
            self.set_leader(now, t, p, leader, fallback);
        }
        self.refresh_soon(now);
    }

    /// Routes partition `p` of topic `t` to broker `leader`, adding a link to it if none
    /// exists and the metadata named its address.
    fn set_leader(&mut self, now: Tick, t: usize, p: usize, leader: u32, answered_by: usize) {
        if self.links.of_broker(leader).is_none() {
            if let Some(name) = self.topics.brokers.get(&leader).cloned() {
                let link = self.links.ensure(&name, &self.cfg, now);
                self.links.list[link].advertised_id = Some(leader);
            }
        }
        let Some(part) = self.topics.list.get_mut(t).and_then(|t| t.parts.get_mut(p)) else { return };
        part.stale_leader = false;
        if part.leader != Some(leader) {
            if part.leader.is_some() {
                tracing::info!(partition = p, from = ?part.leader, to = leader, "partition leader moved");
            }
            part.leader = Some(leader);
        }
        part.fallback_link = answered_by;
    }

    fn new_part(&self, tid: u32, p: u32, link: usize) -> PartState {
        let streams = self.links.connections_per_broker() * self.links.streams_per_connection();
        // Spread partitions over streams; a partition keeps its stream index for life.
        let g = (tid as usize).wrapping_mul(7919).wrapping_add(p as usize) % streams;
        PartState {
            window: Window::new(self.cfg.idempotence, self.cfg.max_in_flight),
            carry: None,
            popped: 0,
            since: None,
            oldest: None,
            active: false,
            stream: g,
            leader: None,
            fallback_link: link,
            stale_leader: false,
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
