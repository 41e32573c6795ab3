//! Cluster frames (kinds `0x10..=0x1f`, answers `0x90..=0x9f`): replication between
//! brokers, leader-epoch lookups for truncation (KIP-101), cluster and topic descriptions,
//! replicated topic creation and partition growth, and the `NotLeader` answer that names
//! the new leader (KIP-951). `PROTOCOL.md` §21 describes them byte for byte.
//!
//! They travel in ordinary frames ([`super::Frame`]) as [`super::Payload::Cluster`].

use bytes::{BufMut, Bytes, BytesMut};

use super::batch::BATCH_HEADER_LEN;
use super::codec::{put_str16, str16_len, Reader};
use super::error::{DecodeError, ErrorCode};
use super::frame::FrameKind;

/// `ReplicaFetch` (0x10): a follower reads the leader's log from its own log end,
/// reporting what it has fsync'd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetch {
    /// The follower's broker id.
    pub replica_id: u32,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The leader epoch the follower believes current (fencing).
    pub leader_epoch: i32,
    /// The follower's log end: the first offset it wants.
    pub fetch_offset: i64,
    /// The follower's fsync'd end (≤ `fetch_offset`).
    pub durable_offset: i64,
    /// Soft limit on returned batch bytes (at least one batch is returned).
    pub max_bytes: u32,
    /// How long the leader may hold the request when it has nothing new (long poll).
    pub max_wait_ms: u32,
}

/// `ReplicaFetchOk` (0x90): the leader's batches, each preceded by the leader epoch that
/// appended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchOk {
    /// The leader's current epoch.
    pub leader_epoch: i32,
    /// The leader's high watermark.
    pub high_watermark: i64,
    /// The leader's first stored offset.
    pub log_start_offset: i64,
    /// The leader's log end.
    pub log_end_offset: i64,
    /// Zero or more `epoch (i32) + whole stored batch` entries, back to back, to the end
    /// of the frame. Read them with [`ReplicaFetchOk::batches`].
    pub records: Bytes,
}

/// One entry of [`ReplicaFetchOk::records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochBatch {
    /// The leader epoch the batch was appended in.
    pub leader_epoch: i32,
    /// The batch exactly as stored (base offset set).
    pub batch: Bytes,
}

impl ReplicaFetchOk {
    /// Appends one entry to a records buffer.
    pub fn push_batch(records: &mut BytesMut, leader_epoch: i32, batch: &[u8]) {
        records.reserve(4 + batch.len());
        records.put_i32(leader_epoch);
        records.put_slice(batch);
    }

    /// Splits [`ReplicaFetchOk::records`] into entries. Checks the framing (each batch's
    /// length field) but not the batches' contents: the follower checks each with
    /// `check_batch` before appending it.
    pub fn batches(&self) -> Result<Vec<EpochBatch>, DecodeError> {
        let mut out = Vec::new();
        let mut pos = 0;
        let data = &self.records;
        while pos < data.len() {
            let mut r = Reader::new(&data[pos..]);
            let leader_epoch = r.i32("leader_epoch")?;
            let head = r.take(12, "batch header")?;
            let len = 12 + u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
            if len < BATCH_HEADER_LEN {
                return Err(DecodeError::InvalidValue { field: "batch_length", value: len as i64 - 12 });
            }
            let have = data.len() - pos - 4;
            if have < len {
                return Err(DecodeError::UnexpectedEof { field: "batch", offset: pos + 4, need: len, have });
            }
            out.push(EpochBatch { leader_epoch, batch: data.slice(pos + 4..pos + 4 + len) });
            pos += 4 + len;
        }
        Ok(out)
    }
}

/// `OffsetForLeaderEpoch` (0x11): "where does `epoch` end in your log?" (KIP-101).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetForLeaderEpoch {
    /// The asking follower's broker id.
    pub replica_id: u32,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The leader epoch the follower believes current (fencing).
    pub current_leader_epoch: i32,
    /// The epoch asked about (the follower's latest).
    pub epoch: i32,
}

/// `OffsetForLeaderEpochOk` (0x91): the largest epoch ≤ the one asked about and where it
/// ends in the leader's log; `-1, -1` when the leader has no epochs, `-1, start` when all
/// its epochs are newer (start = where its first epoch begins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetForLeaderEpochOk {
    /// The answering epoch, or -1.
    pub leader_epoch: i32,
    /// Its end offset (exclusive), or -1.
    pub end_offset: i64,
}

/// A broker in [`DescribeClusterOk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    /// Broker id.
    pub id: u32,
    /// Host (empty when not registered).
    pub host: String,
    /// Port (0 when not registered).
    pub port: u16,
    /// Whether it is registered (its session lease holds).
    pub alive: bool,
}

/// `DescribeClusterOk` (0x92): answer to `DescribeCluster` (0x12, empty body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterOk {
    /// The controller's broker id, or -1.
    pub controller: i32,
    /// Registered brokers, and brokers named as replicas that are not registered.
    pub brokers: Vec<ClusterBroker>,
}

/// `DescribeTopics` (0x13): replication state of topics (empty list: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopics {
    /// Topic names; empty for all.
    pub topics: Vec<String>,
}

/// A partition in [`DescribeTopicsOk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    /// Partition index.
    pub partition: u32,
    /// Leader broker id, or -1.
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<u32>,
    /// In-sync replica broker ids.
    pub isr: Vec<u32>,
}

/// A topic in [`DescribeTopicsOk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReplicas {
    /// Topic name.
    pub name: String,
    /// `NONE`, `UNKNOWN_TOPIC_OR_PARTITION` or `AUTHORIZATION_FAILED`.
    pub error: ErrorCode,
    /// Replication factor.
    pub replication_factor: u16,
    /// Minimum in-sync replicas.
    pub min_insync_replicas: u16,
    /// Partitions in index order (only those assigned so far).
    pub partitions: Vec<PartitionReplicas>,
}

/// `DescribeTopicsOk` (0x93).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeTopicsOk {
    /// Topics.
    pub topics: Vec<TopicReplicas>,
}

/// `CreateReplicatedTopic` (0x14) and its echo `CreateReplicatedTopicOk` (0x94).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateReplicatedTopic {
    /// Topic name.
    pub topic: String,
    /// Partition count (≥ 1).
    pub partitions: u32,
    /// Replicas per partition (1 to the number of live brokers).
    pub replication_factor: u16,
    /// In-sync replicas needed for acks=all (1 to the replication factor).
    pub min_insync_replicas: u16,
}

/// `AlterPartitions` (0x15) and its echo `AlterPartitionsOk` (0x95): raise a topic's
/// partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitions {
    /// Topic name.
    pub topic: String,
    /// The new partition count (≥ the current one).
    pub partitions: u32,
}

/// `NotLeader` (0x9f): sent instead of the answer to a partition request (`Produce`,
/// `Fetch`, `ReplicaFetch`, `OffsetForLeaderEpoch`) that reached a broker which does not
/// lead the partition. Names the leader when known (KIP-951), so the client can go there
/// at once and refresh its metadata in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLeader {
    /// `NOT_LEADER`, or `FENCED_LEADER_EPOCH` / `UNKNOWN_LEADER_EPOCH` for replication
    /// requests whose epoch does not match.
    pub error: ErrorCode,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The leader's broker id, or -1 when there is none or it is unknown.
    pub leader: i32,
    /// The leader epoch this broker knows.
    pub leader_epoch: i32,
    /// The leader's host (empty when unknown).
    pub host: String,
    /// The leader's port (0 when unknown).
    pub port: u16,
}

/// The body of a cluster frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterPayload {
    /// 0x10.
    ReplicaFetch(ReplicaFetch),
    /// 0x11.
    OffsetForLeaderEpoch(OffsetForLeaderEpoch),
    /// 0x12 (empty body).
    DescribeCluster,
    /// 0x13.
    DescribeTopics(DescribeTopics),
    /// 0x14.
    CreateReplicatedTopic(CreateReplicatedTopic),
    /// 0x15.
    AlterPartitions(AlterPartitions),
    /// 0x90.
    ReplicaFetchOk(ReplicaFetchOk),
    /// 0x91.
    OffsetForLeaderEpochOk(OffsetForLeaderEpochOk),
    /// 0x92.
    DescribeClusterOk(DescribeClusterOk),
    /// 0x93.
    DescribeTopicsOk(DescribeTopicsOk),
    /// 0x94.
    CreateReplicatedTopicOk(CreateReplicatedTopic),
    /// 0x95.
    AlterPartitionsOk(AlterPartitions),
    /// 0x9f.
    NotLeader(NotLeader),
}

fn ids_len(ids: &[u32]) -> usize {
    2 + 4 * ids.len()
}

fn put_ids(buf: &mut BytesMut, ids: &[u32]) {
    buf.put_u16(ids.len() as u16);
    for id in ids {
        buf.put_u32(*id);
    }
}

fn read_ids(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<u32>, DecodeError> {
    let n = r.u16(field)? as usize;
    if n * 4 > r.remaining() {
        return Err(DecodeError::UnexpectedEof { field, offset: r.position(), need: n * 4, have: r.remaining() });
    }
    (0..n).map(|_| r.u32(field)).collect()
}

fn partition_len(p: &PartitionReplicas) -> usize {
    4 + 4 + 4 + ids_len(&p.replicas) + ids_len(&p.isr)
}

fn topic_len(t: &TopicReplicas) -> usize {
    str16_len(&t.name) + 2 + 2 + 2 + 4 + t.partitions.iter().map(partition_len).sum::<usize>()
}

impl ClusterPayload {
    /// The frame kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            ClusterPayload::ReplicaFetch(_) => FrameKind::ReplicaFetch,
            ClusterPayload::OffsetForLeaderEpoch(_) => FrameKind::OffsetForLeaderEpoch,
            ClusterPayload::DescribeCluster => FrameKind::DescribeCluster,
            ClusterPayload::DescribeTopics(_) => FrameKind::DescribeTopics,
            ClusterPayload::CreateReplicatedTopic(_) => FrameKind::CreateReplicatedTopic,
            ClusterPayload::AlterPartitions(_) => FrameKind::AlterPartitions,
            ClusterPayload::ReplicaFetchOk(_) => FrameKind::ReplicaFetchOk,
            ClusterPayload::OffsetForLeaderEpochOk(_) => FrameKind::OffsetForLeaderEpochOk,
            ClusterPayload::DescribeClusterOk(_) => FrameKind::DescribeClusterOk,
            ClusterPayload::DescribeTopicsOk(_) => FrameKind::DescribeTopicsOk,
            ClusterPayload::CreateReplicatedTopicOk(_) => FrameKind::CreateReplicatedTopicOk,
            ClusterPayload::AlterPartitionsOk(_) => FrameKind::AlterPartitionsOk,
            ClusterPayload::NotLeader(_) => FrameKind::NotLeader,
        }
    }

    /// Exactly the bytes [`ClusterPayload::encode_body`] writes.
    pub fn body_len(&self) -> usize {
        match self {
            ClusterPayload::ReplicaFetch(f) => 4 + str16_len(&f.topic) + 4 + 4 + 8 + 8 + 4 + 4,
            ClusterPayload::OffsetForLeaderEpoch(o) => 4 + str16_len(&o.topic) + 4 + 4 + 4,
            ClusterPayload::DescribeCluster => 0,
            ClusterPayload::DescribeTopics(d) => 2 + d.topics.iter().map(|t| str16_len(t)).sum::<usize>(),
            ClusterPayload::CreateReplicatedTopic(c) | ClusterPayload::CreateReplicatedTopicOk(c) => {
                str16_len(&c.topic) + 4 + 2 + 2
            }
            ClusterPayload::AlterPartitions(a) | ClusterPayload::AlterPartitionsOk(a) => str16_len(&a.topic) + 4,
            ClusterPayload::ReplicaFetchOk(f) => 4 + 8 + 8 + 8 + f.records.len(),
            ClusterPayload::OffsetForLeaderEpochOk(_) => 4 + 8,
            ClusterPayload::DescribeClusterOk(d) => {
                4 + 2 + d.brokers.iter().map(|b| 4 + str16_len(&b.host) + 2 + 1).sum::<usize>()
            }
            ClusterPayload::DescribeTopicsOk(d) => 2 + d.topics.iter().map(topic_len).sum::<usize>(),
            ClusterPayload::NotLeader(n) => 2 + str16_len(&n.topic) + 4 + 4 + 4 + str16_len(&n.host) + 2,
        }
    }

    /// Appends the body.
    pub fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            ClusterPayload::ReplicaFetch(f) => {
                buf.put_u32(f.replica_id);
                put_str16(buf, &f.topic);
                buf.put_u32(f.partition);
                buf.put_i32(f.leader_epoch);
                buf.put_i64(f.fetch_offset);
                buf.put_i64(f.durable_offset);
                buf.put_u32(f.max_bytes);
                buf.put_u32(f.max_wait_ms);
            }
            ClusterPayload::OffsetForLeaderEpoch(o) => {
                buf.put_u32(o.replica_id);
                put_str16(buf, &o.topic);
                buf.put_u32(o.partition);
                buf.put_i32(o.current_leader_epoch);
                buf.put_i32(o.epoch);
            }
            ClusterPayload::DescribeCluster => {}
            ClusterPayload::DescribeTopics(d) => {
                buf.put_u16(d.topics.len() as u16);
                for t in &d.topics {
                    put_str16(buf, t);
                }
            }
            ClusterPayload::CreateReplicatedTopic(c) | ClusterPayload::CreateReplicatedTopicOk(c) => {
                put_str16(buf, &c.topic);
                buf.put_u32(c.partitions);
                buf.put_u16(c.replication_factor);
                buf.put_u16(c.min_insync_replicas);
            }
            ClusterPayload::AlterPartitions(a) | ClusterPayload::AlterPartitionsOk(a) => {
                put_str16(buf, &a.topic);
                buf.put_u32(a.partitions);
            }
            ClusterPayload::ReplicaFetchOk(f) => {
                buf.put_i32(f.leader_epoch);
                buf.put_i64(f.high_watermark);
                buf.put_i64(f.log_start_offset);
                buf.put_i64(f.log_end_offset);
                buf.put_slice(&f.records);
            }
            ClusterPayload::OffsetForLeaderEpochOk(o) => {
                buf.put_i32(o.leader_epoch);
                buf.put_i64(o.end_offset);
            }
            ClusterPayload::DescribeClusterOk(d) => {
                buf.put_i32(d.controller);
                buf.put_u16(d.brokers.len() as u16);
                for b in &d.brokers {
                    buf.put_u32(b.id);
                    put_str16(buf, &b.host);
                    buf.put_u16(b.port);
                    buf.put_u8(u8::from(b.alive));
                }
            }
            ClusterPayload::DescribeTopicsOk(d) => {
                buf.put_u16(d.topics.len() as u16);
                for t in &d.topics {
                    put_str16(buf, &t.name);
                    buf.put_u16(t.error.as_u16());
                    buf.put_u16(t.replication_factor);
                    buf.put_u16(t.min_insync_replicas);
                    buf.put_u32(t.partitions.len() as u32);
                    for p in &t.partitions {
                        buf.put_u32(p.partition);
                        buf.put_i32(p.leader);
                        buf.put_i32(p.leader_epoch);
                        put_ids(buf, &p.replicas);
                        put_ids(buf, &p.isr);
                    }
                }
            }
            ClusterPayload::NotLeader(n) => {
                buf.put_u16(n.error.as_u16());
                put_str16(buf, &n.topic);
                buf.put_u32(n.partition);
                buf.put_i32(n.leader);
                buf.put_i32(n.leader_epoch);
                put_str16(buf, &n.host);
                buf.put_u16(n.port);
            }
        }
    }

    /// Decodes the body of a cluster `kind` (exactly the bytes after the frame header).
    /// Any other kind is [`DecodeError::UnknownFrameKind`].
    pub fn decode(kind: FrameKind, body: Bytes) -> Result<ClusterPayload, DecodeError> {
        let mut r = Reader::new(&body);
        let p = match kind {
            FrameKind::ReplicaFetch => ClusterPayload::ReplicaFetch(ReplicaFetch {
                replica_id: r.u32("replica_id")?,
                topic: r.str16("topic")?,
                partition: r.u32("partition")?,
                leader_epoch: r.i32("leader_epoch")?,
                fetch_offset: r.i64("fetch_offset")?,
                durable_offset: r.i64("durable_offset")?,
                max_bytes: r.u32("max_bytes")?,
                max_wait_ms: r.u32("max_wait_ms")?,
            }),
            FrameKind::OffsetForLeaderEpoch => ClusterPayload::OffsetForLeaderEpoch(OffsetForLeaderEpoch {
                replica_id: r.u32("replica_id")?,
                topic: r.str16("topic")?,
                partition: r.u32("partition")?,
                current_leader_epoch: r.i32("current_leader_epoch")?,
                epoch: r.i32("epoch")?,
            }),
            FrameKind::DescribeCluster => ClusterPayload::DescribeCluster,
            FrameKind::DescribeTopics => {
                let n = r.u16("topic_count")?;
                let topics = (0..n).map(|_| r.str16("topic")).collect::<Result<_, _>>()?;
                ClusterPayload::DescribeTopics(DescribeTopics { topics })
            }
            FrameKind::CreateReplicatedTopic | FrameKind::CreateReplicatedTopicOk => {
                let c = CreateReplicatedTopic {
                    topic: r.str16("topic")?,
                    partitions: r.u32("partitions")?,
                    replication_factor: r.u16("replication_factor")?,
                    min_insync_replicas: r.u16("min_insync_replicas")?,
                };
                if kind == FrameKind::CreateReplicatedTopic {
                    ClusterPayload::CreateReplicatedTopic(c)
                } else {
                    ClusterPayload::CreateReplicatedTopicOk(c)
                }
            }
            FrameKind::AlterPartitions | FrameKind::AlterPartitionsOk => {
                let a = AlterPartitions { topic: r.str16("topic")?, partitions: r.u32("partitions")? };
                if kind == FrameKind::AlterPartitions {
                    ClusterPayload::AlterPartitions(a)
                } else {
                    ClusterPayload::AlterPartitionsOk(a)
                }
            }
            FrameKind::ReplicaFetchOk => {
                let leader_epoch = r.i32("leader_epoch")?;
                let high_watermark = r.i64("high_watermark")?;
                let log_start_offset = r.i64("log_start_offset")?;
                let log_end_offset = r.i64("log_end_offset")?;
                let records = body.slice(r.position()..);
                return Ok(ClusterPayload::ReplicaFetchOk(ReplicaFetchOk {
                    leader_epoch,
                    high_watermark,
                    log_start_offset,
                    log_end_offset,
                    records,
                }));
            }
            FrameKind::OffsetForLeaderEpochOk => ClusterPayload::OffsetForLeaderEpochOk(OffsetForLeaderEpochOk {
                leader_epoch: r.i32("leader_epoch")?,
                end_offset: r.i64("end_offset")?,
            }),
            FrameKind::DescribeClusterOk => {
                let controller = r.i32("controller")?;
                let n = r.u16("broker_count")?;
                let brokers = (0..n)
                    .map(|_| {
                        let id = r.u32("broker_id")?;
                        let host = r.str16("host")?;
                        let port = r.u16("port")?;
                        let alive = match r.u8("alive")? {
                            0 => false,
                            1 => true,
                            v => return Err(DecodeError::InvalidValue { field: "alive", value: v as i64 }),
                        };
                        Ok(ClusterBroker { id, host, port, alive })
                    })
                    .collect::<Result<_, DecodeError>>()?;
                ClusterPayload::DescribeClusterOk(DescribeClusterOk { controller, brokers })
            }
            FrameKind::DescribeTopicsOk => {
                let n = r.u16("topic_count")?;
                // Each topic takes at least 12 bytes: do not let a count allocate ahead.
                let mut topics = Vec::with_capacity((n as usize).min(r.remaining() / 12));
                for _ in 0..n {
                    let name = r.str16("topic")?;
                    let error = ErrorCode::from_u16(r.u16("error")?)?;
                    let replication_factor = r.u16("replication_factor")?;
                    let min_insync_replicas = r.u16("min_insync_replicas")?;
                    let np = r.u32("partition_count")? as usize;
                    // Each partition takes at least 16 bytes.
                    if np.saturating_mul(16) > r.remaining() {
                        return Err(DecodeError::UnexpectedEof {
                            field: "partitions",
                            offset: r.position(),
                            need: np.saturating_mul(16),
                            have: r.remaining(),
                        });
                    }
                    let mut partitions = Vec::with_capacity(np);
                    for _ in 0..np {
                        partitions.push(PartitionReplicas {
                            partition: r.u32("partition")?,
                            leader: r.i32("leader")?,
                            leader_epoch: r.i32("leader_epoch")?,
                            replicas: read_ids(&mut r, "replicas")?,
                            isr: read_ids(&mut r, "isr")?,
                        });
                    }
                    topics.push(TopicReplicas { name, error, replication_factor, min_insync_replicas, partitions });
                }
                ClusterPayload::DescribeTopicsOk(DescribeTopicsOk { topics })
            }
            FrameKind::NotLeader => ClusterPayload::NotLeader(NotLeader {
                error: ErrorCode::from_u16(r.u16("error")?)?,
                topic: r.str16("topic")?,
                partition: r.u32("partition")?,
                leader: r.i32("leader")?,
                leader_epoch: r.i32("leader_epoch")?,
                host: r.str16("host")?,
                port: r.u16("port")?,
            }),
            other => return Err(DecodeError::UnknownFrameKind { kind: other as u8 }),
        };
        r.finish("frame body")?;
        Ok(p)
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
pub(crate) mod tests;
