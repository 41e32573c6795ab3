//! The core against a scripted broker: the test decides, step by step, which connection
//! attempts succeed, which requests are answered (and how), which connections break and
//! how far the clock jumps. Records carry their id as value; at the end every outcome is
//! checked against what the broker model stored.

mod broker_model;
mod props;
mod scenarios;
mod window;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{Action, ConnId, Core, HelloInfo, Outcome, StreamId, Tick};
use crate::producer::accumulator::{Accumulator, QueuedRecord};
use crate::producer::config::{Backoff, ProducerConfig};
use crate::producer::delivery::Delivery;
use crate::producer::error::{ErrorKind, Persistence, ProduceError};
use crate::producer::metrics::ProducerMetrics;
use crate::producer::record::RecordMetadata;
use crate::protocol::frame::{
    BrokerInfo, InitProducerIdOk, MetadataOk, PartitionMetadata, ProduceResult, TopicMetadata,
};
use crate::protocol::{Acks, ErrorCode, Frame, Payload, Record};
use crate::transport::TransportError;
pub(crate) use broker_model::{BrokerModel, EpochRule};

/// What a record's delivery reported.
pub(crate) type RecordOutcome = Result<RecordMetadata, ProduceError>;

/// A produce request the core wrote, not yet processed by the broker.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// Its place in `Sim::written`.
    pub index: usize,
    pub corr: u32,
    pub topic: String,
    pub partition: u32,
    pub acks: Acks,
    pub batch: Bytes,
}

/// How the scripted broker treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// As a broker would (append, dedup or refuse by the idempotence rules).
    Normal,
    /// Refused with this code before anything is looked at (base offset -1).
    Refuse(ErrorCode),
    /// Handled normally, but the answer never reaches the producer.
    Lost,
    /// Appended, then answered REQUEST_TIMED_OUT with its offset (fsync too slow).
    TimedOutAfterAppend,
    /// Not appended; answered with a cluster's `NotLeader` frame naming broker `Some(id)`
    /// (its address from the broker list) or no leader.
    NotLeader(Option<u32>),
}

/// A broker the core may reach: its link name and id.
#[derive(Debug, Clone)]
pub(crate) struct SimBroker {
    pub name: String,
    pub id: u32,
}

/// The scripted world around one core.
pub(crate) struct Sim {
    pub core: Core,
    pub acc: Arc<Accumulator>,
    pub now: Tick,
    pub broker: BrokerModel,
    pub brokers: Vec<SimBroker>,
    /// Partition counts of the topics the broker has.
    pub topics: HashMap<String, u32>,
    /// Leader per partition (default: the first broker).
    pub leaders: HashMap<(String, u32), u32>,
    /// Announced in HelloOk.
    pub max_frame: usize,
    pub per_partition_epochs: bool,
    /// Connection attempts waiting for the test's decision.
    pub connects: VecDeque<(ConnId, String)>,
    /// Control requests waiting for an answer: (tag, connection, request).
    pub calls: VecDeque<(u64, ConnId, Payload)>,
    /// Produce requests per stream, in order.
    pub streams: HashMap<StreamId, VecDeque<Request>>,
    /// Every produce request written, in order (for assertions).
    pub written: Vec<(StreamId, Request)>,
    /// When each of `written` was handed out.
    pub handed: Vec<Tick>,
    pub resets: Vec<StreamId>,
    pub closes: Vec<ConnId>,
    pub flushed: Vec<Result<(), ProduceError>>,
    pub fatal: Option<ProduceError>,
    /// Record outcomes as they are delivered: (id, outcome).
    pub outcomes: Arc<Mutex<Vec<(u64, RecordOutcome)>>>,
    /// Topic and partition of every record sent, by id.
    pub sent: Vec<(String, u32)>,
    /// Requests are reported written as soon as they are handed out (else when the test
    /// says, several at once: `report_written`).
    pub auto_written: bool,
    /// Requests handed out and not reported written yet, per stream.
    pub unwritten: HashMap<StreamId, usize>,
    /// What each of `written` was answered: `None` never (lost, dropped, in limbo, or acks
    /// none), else whether the answer said "appended but not confirmed".
    pub answers: Vec<Option<bool>>,
    /// Requests the broker had read from a connection or stream that then broke: they may
    /// still be processed (appended) later, in order per stream, answer discarded.
    pub limbo: Vec<(StreamId, VecDeque<Request>)>,
    /// A stream the core resets leaves its unprocessed requests in limbo (else they are
    /// dropped unread).
    pub limbo_on_reset: bool,
    /// A broker refuses NOT_LEADER for partitions it does not lead.
    pub strict_leaders: bool,
    /// Checks every request written: no record still in limbo is sent renumbered or in
    /// another epoch while its limbo request can still land.
    pub check_landing: bool,
    /// The core finished and the shell's end was played (the accumulator closed).
    pub ended: bool,
    /// Streams on which an answer was lost: the core takes the next answer there for a
    /// mismatch and drops the stream, so later answers on it are not received either.
    pub desynced: std::collections::HashSet<StreamId>,
}

/// The configuration the scenarios start from: one bootstrap broker, no linger, short
/// back-offs without jitter.
pub(crate) fn config() -> ProducerConfig {
    let fixed = |ms| Backoff { base: Duration::from_millis(ms), max: Duration::from_millis(ms * 4), jitter: 0.0 };
    ProducerConfig {
        bootstrap: vec!["b0:1".into()],
        linger: Duration::ZERO,
        batch_size: 1024,
        retry_backoff: fixed(100),
        reconnect_backoff: fixed(50),
        request_timeout: Duration::from_secs(30),
        delivery_timeout: Duration::from_secs(120),
        ..ProducerConfig::default()
    }
}

impl Sim {
    pub(crate) fn new(cfg: ProducerConfig) -> Sim {
        Sim::with_rule(cfg, EpochRule::PerPartition)
    }

    pub(crate) fn with_rule(cfg: ProducerConfig, rule: EpochRule) -> Sim {
        let now = Tick::now();
        let acc = Arc::new(Accumulator::new(cfg.buffer_memory, cfg.batch_size));
        let brokers =
            cfg.bootstrap.iter().enumerate().map(|(i, n)| SimBroker { name: n.clone(), id: i as u32 }).collect();
        let core = Core::new(Arc::new(cfg), acc.clone(), Arc::new(ProducerMetrics::default()), 7, now);
        Sim {
            core,
            acc,
            now,
            broker: BrokerModel::new(rule),
            brokers,
            topics: HashMap::new(),
            leaders: HashMap::new(),
            max_frame: crate::protocol::MAX_FRAME_SIZE,
            per_partition_epochs: false,
            connects: VecDeque::new(),
            calls: VecDeque::new(),
            streams: HashMap::new(),
            written: Vec::new(),
            handed: Vec::new(),
            resets: Vec::new(),
            closes: Vec::new(),
            flushed: Vec::new(),
            fatal: None,
            outcomes: Arc::default(),
            sent: Vec::new(),
            auto_written: true,
            unwritten: HashMap::new(),
            answers: Vec::new(),
            limbo: Vec::new(),
            limbo_on_reset: false,
            strict_leaders: false,
            check_landing: true,
            ended: false,
            desynced: Default::default(),
        }
    }

    /// A started core with `topic` (of `partitions`) known and a producer id: the usual
    /// starting point.
    pub(crate) fn ready(cfg: ProducerConfig, topic: &str, partitions: u32) -> Sim {
        let mut s = Sim::new(cfg);
        s.topics.insert(topic.into(), partitions);
        s.start(topic);
        s
    }

    /// Connects, learns `topic` and gets a producer id.
    pub(crate) fn start(&mut self, topic: &str) {
        self.step();
        self.accept_connects();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        self.core.handle_metadata_wanted(self.now, topic.into(), Some(tx));
        self.settle_control();
        assert!(self.acc.topic(topic).is_some(), "metadata for {topic} answered");
    }

    /// Runs `handle_timeout` and collects every output.
    pub(crate) fn step(&mut self) {
        self.core.handle_timeout(self.now);
        self.collect();
    }

    /// Collects outputs (after any input).
    pub(crate) fn collect(&mut self) {
        loop {
            let mut any = false;
            while let Some(t) = self.core.poll_transmit() {
                any = true;
                let mut buf = BytesMut::new();
                buf.extend_from_slice(&t.head);
                buf.extend_from_slice(&t.batch);
                let frame = Frame::decode(&mut buf, usize::MAX).expect("valid frame").expect("whole frame");
                let Payload::Produce(p) = frame.payload else { panic!("only produce requests on data streams") };
                let req = Request {
                    index: self.written.len(),
                    corr: frame.correlation_id,
                    topic: p.topic,
                    partition: p.partition,
                    acks: p.acks,
                    batch: p.batch,
                };
                if std::env::var("QWIRE_SIM_TRACE").is_ok() {
                    let h = crate::protocol::RecordBatch::from_bytes(req.batch.clone()).unwrap().header().producer;
                    eprintln!(
                        "write {}-{} corr {} on {:?} epoch {} seq {} ids {:?}",
                        req.topic,
                        req.partition,
                        req.corr,
                        (t.stream.conn.slot, t.stream.conn.gen, t.stream.index, t.stream.gen),
                        h.producer_epoch,
                        h.base_sequence,
                        broker_model::ids_of(&req.batch)
                    );
                }
                if self.check_landing {
                    self.check_not_landing(&req);
                }
                self.written.push((t.stream, req.clone()));
                self.handed.push(self.now);
                self.answers.push(None);
                self.streams.entry(t.stream).or_default().push_back(req);
                if self.auto_written {
                    self.core.handle_written(self.now, t.stream, 1);
                } else {
                    *self.unwritten.entry(t.stream).or_default() += 1;
                }
            }
            while let Some(a) = self.core.poll_action() {
                any = true;
                match a {
                    Action::Connect { conn, addr, .. } => self.connects.push_back((conn, addr)),
                    Action::Call { tag, conn, request, .. } => self.calls.push_back((tag, conn, request)),
                    Action::ResetStream { stream } => {
                        self.resets.push(stream);
                        let read = if self.limbo_on_reset { usize::MAX } else { 0 };
                        self.drop_stream(stream, read);
                        let next = StreamId { gen: stream.gen + 1, ..stream };
                        self.core.handle_stream_opened(self.now, next);
                    }
                    Action::Close { conn, .. } => {
                        self.closes.push(conn);
                        for st in self.streams.keys().filter(|s| s.conn == conn).copied().collect::<Vec<_>>() {
                            self.drop_stream(st, 0);
                        }
                    }
                }
            }
            while let Some(o) = self.core.poll_outcome() {
                any = true;
                if let Outcome::Flushed { result, .. } = &o {
                    self.flushed.push(result.clone());
                }
                if let Some(Outcome::Fatal(e)) = o.complete() {
                    // As the shell does: new records fail at once.
                    for r in self.acc.close(e.clone()) {
                        r.delivery.complete(Err(e.clone()));
                    }
                    self.fatal = Some(e);
                }
            }
            if !any {
                break;
            }
        }
        if self.core.is_finished() && !self.ended {
            // As the shell's end guard: later records fail at once.
            self.ended = true;
            let e = self.fatal.clone().unwrap_or_else(super::closed_error);
            for r in self.acc.close(e.clone()) {
                r.delivery.complete(Err(e.clone().with_persistence(Persistence::NotPersisted)));
            }
        }
    }

    /// The broker stops reading `stream`: its first `read` unprocessed requests were read
    /// (they go to limbo), the rest are dropped unread.
    pub(crate) fn drop_stream(&mut self, stream: StreamId, read: usize) {
        self.unwritten.remove(&stream);
        let Some(mut q) = self.streams.remove(&stream) else { return };
        q.truncate(read.min(q.len()));
        if !q.is_empty() {
            self.limbo.push((stream, q));
        }
    }

    /// Processes the next request of limbo group `pick` (late: the answer goes nowhere).
    pub(crate) fn land(&mut self, pick: usize) {
        if self.limbo.is_empty() {
            return;
        }
        let g = pick % self.limbo.len();
        let req = self.limbo[g].1.pop_front().expect("non-empty group");
        if self.limbo[g].1.is_empty() {
            self.limbo.remove(g);
        }
        if std::env::var("QWIRE_SIM_TRACE").is_ok() {
            eprintln!(
                "land {}-{} corr {} ids {:?}",
                req.topic,
                req.partition,
                req.corr,
                broker_model::ids_of(&req.batch)
            );
        }
        if !self.not_leader(self.limbo_stream_link(&req), &req) {
            self.broker.produce(&req.topic, req.partition, &req.batch);
        }
    }

    fn limbo_stream_link(&self, req: &Request) -> usize {
        self.written[req.index].0.conn.link
    }

    /// Every request in limbo lands, in order per stream.
    pub(crate) fn land_all(&mut self) {
        while !self.limbo.is_empty() {
            self.land(0);
        }
    }

    /// Whether the broker of `link` refuses `req` as not the partition's leader.
    fn not_leader(&self, link: usize, req: &Request) -> bool {
        if !self.strict_leaders {
            return false;
        }
        let name = &self.core.links.list[link].name;
        let id = self.brokers.iter().find(|b| &b.name == name).map_or(u32::MAX, |b| b.id);
        let leader = self.leaders.get(&(req.topic.clone(), req.partition)).copied().unwrap_or(self.brokers[0].id);
        id != leader
    }

    /// Reports every request of `stream` handed out so far as written, in one event.
    pub(crate) fn report_written(&mut self, stream: StreamId) {
        if let Some(n) = self.unwritten.remove(&stream).filter(|n| *n > 0) {
            self.core.handle_written(self.now, stream, n);
            self.collect();
        }
    }

    /// Reports everything handed out as written.
    pub(crate) fn report_all_written(&mut self) {
        let streams: Vec<StreamId> = self.unwritten.keys().copied().collect();
        for st in streams {
            self.report_written(st);
        }
    }

    /// Panics if `req` sends a record still in limbo under another sequence number or
    /// epoch (or, without idempotence, at all) while that limbo request can still land:
    /// the record could be stored twice.
    fn check_not_landing(&self, req: &Request) {
        let ids = broker_model::ids_of(&req.batch);
        let stamp = |b: &Bytes| crate::protocol::RecordBatch::from_bytes(b.clone()).unwrap().header().producer;
        let new = stamp(&req.batch);
        let pending: Vec<Bytes> = self.limbo.iter().flat_map(|(_, q)| q.iter().map(|r| r.batch.clone())).collect();
        for (_, q) in &self.limbo {
            for old in q {
                let old_ids = broker_model::ids_of(&old.batch);
                if !old_ids.iter().any(|i| ids.contains(i)) || (stamp(&old.batch) == new && old_ids == ids) {
                    continue;
                }
                let o = stamp(&old.batch);
                let in_epoch = (o.producer_id, o.producer_epoch) == (new.producer_id, new.producer_epoch);
                let others: Vec<Bytes> = pending.iter().filter(|b| **b != old.batch).cloned().collect();
                if self.broker.could_land(&old.topic, old.partition, &old.batch, &others, in_epoch) {
                    panic!(
                        "records {ids:?} sent as {new:?} while {old_ids:?} sent as {o:?} may still land\n{}",
                        self.dump()
                    );
                }
            }
        }
    }

    /// Every pending connection attempt succeeds.
    pub(crate) fn accept_connects(&mut self) {
        while let Some((conn, addr)) = self.connects.pop_front() {
            let id = self.brokers.iter().find(|b| b.name == addr).map_or(0, |b| b.id);
            let hello = HelloInfo {
                broker_id: id,
                max_frame_size: self.max_frame,
                max_batch_bytes: self.max_frame.saturating_sub(64),
                max_in_flight: 5,
                per_partition_epochs: self.per_partition_epochs,
            };
            self.core.handle_connected(self.now, conn, hello);
            self.collect();
        }
    }

    /// Every pending connection attempt fails with `error`.
    pub(crate) fn fail_connects(&mut self, error: impl Fn() -> TransportError) {
        while let Some((conn, _)) = self.connects.pop_front() {
            self.core.handle_connect_failed(self.now, conn, error());
            self.collect();
        }
    }

    /// Answers one pending control request as the broker would.
    pub(crate) fn answer_call(&mut self) -> bool {
        let Some((tag, _, req)) = self.calls.pop_front() else { return false };
        if std::env::var("QWIRE_SIM_TRACE").is_ok() {
            eprintln!("call {tag} {req:?}");
        }
        let answer = match req {
            Payload::Metadata(m) => Ok(Payload::MetadataOk(self.metadata(&m.topics))),
            Payload::InitProducerId(r) => match self.broker.init_producer_id(r.producer_id, r.producer_epoch) {
                Ok((producer_id, producer_epoch)) => {
                    Ok(Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch }))
                }
                Err(code) => Err(broker_error(code)),
            },
            other => panic!("unexpected control request {other:?}"),
        };
        self.core.handle_control(self.now, tag, answer);
        self.collect();
        true
    }

    /// Answers control requests until none is pending.
    pub(crate) fn settle_control(&mut self) {
        for _ in 0..100 {
            self.step();
            if !self.answer_call() {
                return;
            }
        }
        panic!("control requests never settle");
    }

    fn metadata(&self, topics: &[String]) -> MetadataOk {
        let brokers = self
            .brokers
            .iter()
            .map(|b| {
                let (host, port) = b.name.rsplit_once(':').expect("host:port");
                BrokerInfo { id: b.id, host: host.into(), port: port.parse().unwrap() }
            })
            .collect();
        let topics = topics
            .iter()
            .map(|t| match self.topics.get(t) {
                Some(&n) => TopicMetadata {
                    name: t.clone(),
                    error: ErrorCode::None,
                    partitions: (0..n)
                        .map(|p| PartitionMetadata {
                            partition: p,
                            leader: self.leaders.get(&(t.clone(), p)).copied().unwrap_or(self.brokers[0].id),
                            log_start_offset: 0,
                            end_offset: 0,
                            size_bytes: 0,
                        })
                        .collect(),
                },
                None => {
                    TopicMetadata { name: t.clone(), error: ErrorCode::UnknownTopicOrPartition, partitions: vec![] }
                }
            })
            .collect();
        MetadataOk { brokers, topics }
    }

    /// Enqueues `n` records for `topic`-`partition`, as a handle does; returns their ids.
    pub(crate) fn send(&mut self, topic: &str, partition: u32, n: usize) -> Vec<u64> {
        self.send_sized(topic, partition, n, 0)
    }

    /// [`Sim::send`] with `pad` filler bytes after each id.
    pub(crate) fn send_sized(&mut self, topic: &str, partition: u32, n: usize, pad: usize) -> Vec<u64> {
        let t = self.acc.topic(topic).expect("topic known");
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = self.sent.len() as u64;
            self.sent.push((topic.into(), partition));
            let mut value = id.to_string().into_bytes();
            if pad > 0 {
                value.push(b':');
                value.resize(value.len() + pad, b'x');
            }
            let value = Bytes::from(value);
            let size = crate::producer::accumulator::record_size(None, Some(&value), &[]);
            let charge = size + crate::producer::accumulator::RECORD_OVERHEAD;
            if let Ok(p) = self.acc.memory.try_acquire_many(charge as u32) {
                p.forget();
            }
            let log = self.outcomes.clone();
            let delivery = Delivery::callback(Box::new(move |r| log.lock().unwrap().push((id, r))));
            let record = Record { timestamp: 0, key: None, value: Some(value), headers: vec![] };
            self.acc.push(&t, partition, QueuedRecord { record, size, charge, delivery, enqueued: self.now });
            ids.push(id);
        }
        ids
    }

    /// When the `i`-th request written was handed out.
    pub(crate) fn written_at(&self, i: usize) -> Tick {
        self.handed[i]
    }

    /// Moves the clock to the core's next timer (if it is later) and runs it, as the shell
    /// does; false if the core wants no timer.
    pub(crate) fn next_timer(&mut self) -> bool {
        let Some(t) = self.core.poll_timeout(self.now) else { return false };
        if t > self.now {
            self.now = t;
        }
        self.step();
        true
    }

    /// Moves the clock.
    pub(crate) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.step();
    }

    /// The streams with requests waiting, in a stable order.
    pub(crate) fn busy_streams(&self) -> Vec<StreamId> {
        let mut v: Vec<StreamId> = self.streams.iter().filter(|(_, q)| !q.is_empty()).map(|(s, _)| *s).collect();
        v.sort_by_key(|s| (s.conn.link, s.conn.slot, s.conn.gen, s.index, s.gen));
        v
    }

    /// The broker takes the next request of `stream` and treats it as `how` says.
    pub(crate) fn process(&mut self, stream: StreamId, how: Answer) -> Option<Request> {
        let req = self.streams.get_mut(&stream)?.pop_front()?;
        let how = if self.not_leader(stream.conn.link, &req) && how != Answer::Lost {
            Answer::Refuse(ErrorCode::NotLeader)
        } else {
            how
        };
        if std::env::var("QWIRE_SIM_TRACE").is_ok() {
            let h = *crate::protocol::RecordBatch::from_bytes(req.batch.clone()).unwrap().header();
            eprintln!(
                "process {}-{} corr {} epoch {} seq {} n {} ids {:?} as {how:?}",
                req.topic,
                req.partition,
                req.corr,
                h.producer.producer_epoch,
                h.producer.base_sequence,
                h.record_count,
                broker_model::ids_of(&req.batch)
            );
        }
        let answer = match how {
            Answer::NotLeader(_) => None,
            Answer::Normal | Answer::Lost => Some(self.broker.produce(&req.topic, req.partition, &req.batch)),
            Answer::Refuse(code) => Some(refusal(code)),
            Answer::TimedOutAfterAppend => {
                let mut r = self.broker.produce(&req.topic, req.partition, &req.batch);
                if r.error == ErrorCode::None {
                    r.error = ErrorCode::RequestTimedOut;
                }
                Some(r)
            }
        };
        if let Answer::NotLeader(leader) = how {
            let named = leader.and_then(|id| self.brokers.iter().find(|b| b.id == id));
            let (host, port) = named.map_or((String::new(), 0), |b| {
                let (h, p) = b.name.rsplit_once(':').expect("host:port");
                (h.to_owned(), p.parse().expect("port"))
            });
            let n = crate::protocol::cluster::NotLeader {
                error: ErrorCode::NotLeader,
                topic: req.topic.clone(),
                partition: req.partition,
                leader: named.map_or(-1, |b| b.id as i32),
                leader_epoch: 1,
                host,
                port,
            };
            let payload = Payload::Cluster(crate::protocol::cluster::ClusterPayload::NotLeader(n));
            self.core.handle_response(self.now, stream, Frame { correlation_id: req.corr, payload });
            self.collect();
            return Some(req);
        }
        if how == Answer::Lost {
            self.desynced.insert(stream);
        }
        if how != Answer::Lost && req.acks != Acks::None {
            let answer = answer.expect("answered");
            // An answer counts for what the producer knew if it reached it in time: not on a
            // stream that lost an answer before, not after the records had their outcome.
            let late = broker_model::ids_of(&req.batch).iter().all(|id| self.outcome(*id).is_some());
            if !self.desynced.contains(&stream) && !late {
                self.answers[req.index] = Some(answer.error != ErrorCode::None && answer.base_offset >= 0);
            }
            let frame = Frame { correlation_id: req.corr, payload: Payload::ProduceResult(answer) };
            self.core.handle_response(self.now, stream, frame);
            self.collect();
        }
        Some(req)
    }

    /// Processes every waiting request normally.
    pub(crate) fn process_all(&mut self) -> usize {
        let mut n = 0;
        while let Some(&s) = self.busy_streams().first() {
            self.process(s, Answer::Normal);
            n += 1;
        }
        n
    }

    /// The connection breaks.
    pub(crate) fn lose(&mut self, conn: ConnId) {
        self.lose_after_reading(conn, 0);
    }

    /// The connection breaks after the broker read the first `read` waiting requests of
    /// each of its streams (they stay in limbo).
    pub(crate) fn lose_after_reading(&mut self, conn: ConnId, read: usize) {
        for st in self.streams.keys().filter(|s| s.conn == conn).copied().collect::<Vec<_>>() {
            self.drop_stream(st, read);
        }
        self.unwritten.retain(|s, _| s.conn != conn);
        let addr = "127.0.0.1:1".parse().unwrap();
        let error = TransportError::StreamClosed { addr, detail: "scripted loss".into() };
        self.core.handle_connection_lost(self.now, conn, error);
        self.collect();
    }

    /// Every open connection the core knows (from the requests written).
    pub(crate) fn conns(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self.streams.keys().map(|s| s.conn).collect();
        v.sort_by_key(|c| (c.link, c.slot, c.gen));
        v.dedup();
        v
    }

    /// Runs everything normally until every record sent has an outcome (or `limit` rounds).
    pub(crate) fn settle(&mut self, limit: usize) {
        for _ in 0..limit {
            if self.outcomes.lock().unwrap().len() >= self.sent.len() && self.core.is_idle() {
                self.step(); // answers what waited for the last outcome (flushes)
                return;
            }
            self.step();
            self.accept_connects();
            while self.answer_call() {}
            if self.process_all() == 0 {
                self.advance(Duration::from_millis(100));
            }
        }
        let done = self.outcomes.lock().unwrap().len();
        panic!(
            "not settled after {limit} rounds: {done} of {} records have an outcome\n{}",
            self.sent.len(),
            self.dump()
        );
    }

    /// The core's state, for a failing test's message.
    pub(crate) fn dump(&self) -> String {
        use std::fmt::Write;
        let c = &self.core;
        let mut out = String::new();
        let _ = writeln!(out, "pid {:?} bump {:?} per-partition {}", c.pid.state, c.pid.bump, c.per_partition_epochs());
        for (ti, t) in c.topics.list.iter().enumerate() {
            for (pi, p) in t.parts.iter().enumerate() {
                let w = &p.window;
                let _ = writeln!(
                    out,
                    "{ti}-{pi}: numbering {:?} drained {} link {} stream {}",
                    w.numbering(),
                    w.is_drained(),
                    c.route(p),
                    p.stream
                );
                for sl in w.iter() {
                    let _ = writeln!(
                        out,
                        "   id {} seq {:?} n {} attempts {} maybe {} {:?}",
                        sl.id, sl.seq, sl.records, sl.attempts, sl.maybe_persisted, sl.state
                    );
                }
            }
        }
        for (li, l) in c.links.list.iter().enumerate() {
            let _ = writeln!(out, "link {li} {} breaker {:?} slots {:?}", l.name, l.breaker, l.slots);
        }
        let _ = writeln!(out, "calls {:?} connects {:?}", self.calls, self.connects);
        let _ = writeln!(out, "streams {:?}", self.streams.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>());
        out
    }

    /// The outcome of record `id`, if it has one.
    pub(crate) fn outcome(&self, id: u64) -> Option<Result<RecordMetadata, ProduceError>> {
        self.outcomes.lock().unwrap().iter().find(|(i, _)| *i == id).map(|(_, r)| r.clone())
    }

    /// Whether the producer had reason to think record `id` may be stored: some request
    /// carrying it got no answer (lost, dropped, in limbo, acks none) or an "appended, not
    /// confirmed" one.
    pub(crate) fn maybe_stored(&self, id: u64) -> bool {
        self.written
            .iter()
            .zip(&self.answers)
            .any(|((_, r), a)| a.is_none_or(|appended| appended) && broker_model::ids_of(&r.batch).contains(&id))
    }

    /// Checks every outcome against the broker's logs: each record has at most one
    /// outcome; acked ⇒ stored once at the acked offset; not persisted ⇒ absent;
    /// persisted ⇒ present; nothing stored twice; each partition's records in send order.
    pub(crate) fn check(&self) {
        let places = self.broker.places();
        let outcomes = self.outcomes.lock().unwrap();
        let mut seen = HashMap::new();
        for (id, r) in outcomes.iter() {
            assert!(seen.insert(*id, ()).is_none(), "record {id} got two outcomes");
            let here = places.get(id).cloned().unwrap_or_default();
            match r {
                Ok(md) => {
                    let (t, p) = &self.sent[*id as usize];
                    match md.offset {
                        Some(o) => {
                            assert_eq!(here.len(), 1, "acked record {id} stored {} times", here.len());
                            assert_eq!(here[0], (t.clone(), *p, o), "record {id} acked at another place");
                        }
                        // acks=none: "acknowledged" means written; it may have been lost.
                        None => assert!(here.len() <= 1, "record {id} stored {} times", here.len()),
                    }
                }
                Err(e) => match e.persistence() {
                    Persistence::NotPersisted => {
                        assert!(here.is_empty(), "record {id} reported not persisted but stored: {e}")
                    }
                    Persistence::Persisted => assert!(!here.is_empty(), "record {id} reported persisted, absent"),
                    Persistence::PossiblyPersisted => assert!(
                        !here.is_empty() || self.maybe_stored(*id),
                        "record {id} reported possibly persisted, but every request carrying it was refused \
                         without an append: {e}\nrequests (corr, answer): {:?}",
                        self.written
                            .iter()
                            .zip(&self.answers)
                            .filter(|((_, r), _)| broker_model::ids_of(&r.batch).contains(id))
                            .map(|((_, r), a)| (r.corr, a))
                            .collect::<Vec<_>>()
                    ),
                },
            }
        }
        for (id, at) in &places {
            assert!(at.len() <= 1, "record {id} stored {} times: {at:?}", at.len());
        }
        // Acknowledged records keep send order. A record that failed "possibly persisted"
        // may still land later, behind others (a request the broker read before its stream
        // broke, in an epoch or id nothing fences any more, or without idempotence), and
        // acks=none claims nothing.
        let acked = |id: &u64| outcomes.iter().any(|(i, r)| i == id && r.as_ref().is_ok_and(|m| m.offset.is_some()));
        for ((t, p), log) in &self.broker.parts {
            let order: Vec<u64> = log.records.iter().copied().filter(|id| acked(id)).collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{t}-{p} out of send order: {:?}", log.records);
        }
    }
}

/// A produce refusal before anything was looked at.
pub(crate) fn refusal(code: ErrorCode) -> ProduceResult {
    ProduceResult { error: code, duplicate: false, base_offset: -1, log_append_time: -1, message: "scripted".into() }
}

/// A broker error answer to a control request.
pub(crate) fn broker_error(code: ErrorCode) -> TransportError {
    TransportError::Broker { addr: "127.0.0.1:1".parse().unwrap(), code, message: "scripted".into() }
}

/// An error kind and persistence, for assertions.
pub(crate) fn status(r: &Result<RecordMetadata, ProduceError>) -> Option<(ErrorKind, Persistence)> {
    r.as_ref().err().map(|e| (e.kind(), e.persistence()))
}
