//! Frames: the length-prefixed, correlation-tagged messages carried on QUIC streams.
//!
//! ```text
//! length          u32   bytes after this field (kind + correlation id + body), >= 5
//! kind            u8    see FrameKind
//! correlation_id  u32   chosen by the client, echoed by the broker's response
//! body            ...   per kind
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::cluster::ClusterPayload;
use super::codec::{put_str16, str16_len, Reader};
use super::error::{DecodeError, ErrorCode};
use super::sasl::SaslPayload;
use super::schema::SchemaFrame;

/// Bytes of the frame header: length prefix, kind and correlation id.
pub const FRAME_HEADER_LEN: usize = 9;
/// The smallest legal value of the length prefix (kind + correlation id).
pub const MIN_FRAME_LENGTH: usize = 5;
/// Hard upper bound on the length prefix. Brokers may announce a lower limit in `HelloOk`.
pub const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Producer acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// Fire and forget: the broker sends no response.
    None,
    /// Acknowledge after the batch is appended to the leader's log (page cache).
    Leader,
    /// Acknowledge after the batch is fsync'd (group commit) and replicated where
    /// replication exists.
    #[default]
    All,
}

impl Acks {
    /// Wire value: 0 none, 1 leader, 2 all.
    pub fn as_u8(self) -> u8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => 2,
        }
    }

    /// Parses a wire value.
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            2 => Ok(Acks::All),
            v => Err(DecodeError::InvalidValue { field: "acks", value: v as i64 }),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::None => "none",
            Acks::Leader => "leader",
            Acks::All => "all",
        })
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "0" => Ok(Acks::None),
            "leader" | "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(format!("unknown acks '{s}' (none, leader, all)")),
        }
    }
}

/// Frame kind byte. Requests are below 0x80, responses at or above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client greeting; answered by `HelloOk`.
    Hello = 0x01,
    /// Producer id allocation or epoch bump.
    InitProducerId = 0x02,
    /// Topic metadata request.
    Metadata = 0x03,
    /// Topic creation.
    CreateTopic = 0x04,
    /// A record batch for one partition.
    Produce = 0x05,
    /// Read batches from an offset.
    Fetch = 0x06,
    /// Cluster: a follower reads the leader's log.
    ReplicaFetch = 0x10,
    /// Cluster: where a leader epoch ends in the leader's log (KIP-101).
    OffsetForLeaderEpoch = 0x11,
    /// Cluster: brokers and controller.
    DescribeCluster = 0x12,
    /// Cluster: replicas, leaders and in-sync sets of topics.
    DescribeTopics = 0x13,
    /// Cluster: create a topic with a replication factor.
    CreateReplicatedTopic = 0x14,
    /// Cluster: raise a topic's partition count.
    AlterPartitions = 0x15,
    /// Authentication: the first client message of a SASL exchange.
    SaslStart = 0x30,
    /// Authentication: the next client message of a SASL exchange.
    SaslContinue = 0x31,
    /// Answer to `Hello`.
    HelloOk = 0x81,
    /// Answer to `InitProducerId`.
    InitProducerIdOk = 0x82,
    /// Answer to `Metadata`.
    MetadataOk = 0x83,
    /// Answer to `CreateTopic`.
    CreateTopicOk = 0x84,
    /// Answer to `Produce` (success or failure).
    ProduceResult = 0x85,
    /// Answer to `Fetch`.
    FetchOk = 0x86,
    /// Answer to `ReplicaFetch`.
    ReplicaFetchOk = 0x90,
    /// Answer to `OffsetForLeaderEpoch`.
    OffsetForLeaderEpochOk = 0x91,
    /// Answer to `DescribeCluster`.
    DescribeClusterOk = 0x92,
    /// Answer to `DescribeTopics`.
    DescribeTopicsOk = 0x93,
    /// Answer to `CreateReplicatedTopic`.
    CreateReplicatedTopicOk = 0x94,
    /// Answer to `AlterPartitions`.
    AlterPartitionsOk = 0x95,
    /// Answer to `SaslStart`.
    SaslStartOk = 0xb0,
    /// Answer to `SaslContinue`.
    SaslContinueOk = 0xb1,
    /// Cluster: answer, in place of the usual one, to a partition request sent to a
    /// broker that does not lead the partition; names the leader when known.
    NotLeader = 0x9f,
    /// Schema registry: register a schema under a subject.
    SchemaRegister = 0x20,
    /// Schema registry: find a schema among a subject's versions.
    SchemaLookup = 0x21,
    /// Schema registry: a schema by global id.
    SchemaGetById = 0x22,
    /// Schema registry: one version of a subject.
    SchemaGetVersion = 0x23,
    /// Schema registry: a subject's versions.
    SchemaListVersions = 0x24,
    /// Schema registry: the subjects.
    SchemaListSubjects = 0x25,
    /// Schema registry: check compatibility.
    SchemaCheck = 0x26,
    /// Schema registry: delete a version or a subject.
    SchemaDelete = 0x27,
    /// Schema registry: a compatibility level.
    SchemaGetConfig = 0x28,
    /// Schema registry: set a compatibility level.
    SchemaSetConfig = 0x29,
    /// Schema registry: set a topic's schema policy.
    SetTopicSchemaPolicy = 0x2a,
    /// Schema registry: a topic's schema policy.
    GetTopicSchemaPolicy = 0x2b,
    /// Answer to `SchemaRegister`.
    SchemaRegisterOk = 0xa0,
    /// Answer to `SchemaLookup`.
    SchemaLookupOk = 0xa1,
    /// Answer to `SchemaGetById`.
    SchemaById = 0xa2,
    /// Answer to `SchemaGetVersion`.
    SchemaVersion = 0xa3,
    /// Answer to `SchemaListVersions`.
    SchemaVersions = 0xa4,
    /// Answer to `SchemaListSubjects`.
    SchemaSubjects = 0xa5,
    /// Answer to `SchemaCheck`.
    SchemaCheckOk = 0xa6,
    /// Answer to `SchemaDelete`.
    SchemaDeleted = 0xa7,
    /// Answer to `SchemaGetConfig`.
    SchemaConfig = 0xa8,
    /// Answer to `SchemaSetConfig`.
    SchemaConfigSet = 0xa9,
    /// Answer to `SetTopicSchemaPolicy`.
    TopicSchemaPolicySet = 0xaa,
    /// Answer to `GetTopicSchemaPolicy`.
    TopicSchemaPolicy = 0xab,
    /// Failure answer to a request: any request other than a well-formed `Produce`
    /// (which gets a `ProduceResult`), and any frame that could not be decoded.
    Error = 0xff,
}

impl FrameKind {
    /// Parses a kind byte; unknown kinds are rejected.
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0x01 => FrameKind::Hello,
            0x02 => FrameKind::InitProducerId,
            0x03 => FrameKind::Metadata,
            0x04 => FrameKind::CreateTopic,
            0x05 => FrameKind::Produce,
            0x06 => FrameKind::Fetch,
            0x10 => FrameKind::ReplicaFetch,
            0x11 => FrameKind::OffsetForLeaderEpoch,
            0x12 => FrameKind::DescribeCluster,
            0x13 => FrameKind::DescribeTopics,
            0x14 => FrameKind::CreateReplicatedTopic,
            0x15 => FrameKind::AlterPartitions,
            0x30 => FrameKind::SaslStart,
            0x31 => FrameKind::SaslContinue,
            0x81 => FrameKind::HelloOk,
            0x82 => FrameKind::InitProducerIdOk,
            0x83 => FrameKind::MetadataOk,
            0x84 => FrameKind::CreateTopicOk,
            0x85 => FrameKind::ProduceResult,
            0x86 => FrameKind::FetchOk,
            0x90 => FrameKind::ReplicaFetchOk,
            0x91 => FrameKind::OffsetForLeaderEpochOk,
            0x92 => FrameKind::DescribeClusterOk,
            0x93 => FrameKind::DescribeTopicsOk,
            0x94 => FrameKind::CreateReplicatedTopicOk,
            0x95 => FrameKind::AlterPartitionsOk,
            0x9f => FrameKind::NotLeader,
            0xb0 => FrameKind::SaslStartOk,
            0xb1 => FrameKind::SaslContinueOk,
            0x20 => FrameKind::SchemaRegister,
            0x21 => FrameKind::SchemaLookup,
            0x22 => FrameKind::SchemaGetById,
            0x23 => FrameKind::SchemaGetVersion,
            0x24 => FrameKind::SchemaListVersions,
            0x25 => FrameKind::SchemaListSubjects,
            0x26 => FrameKind::SchemaCheck,
            0x27 => FrameKind::SchemaDelete,
            0x28 => FrameKind::SchemaGetConfig,
            0x29 => FrameKind::SchemaSetConfig,
            0x2a => FrameKind::SetTopicSchemaPolicy,
            0x2b => FrameKind::GetTopicSchemaPolicy,
            0xa0 => FrameKind::SchemaRegisterOk,
            0xa1 => FrameKind::SchemaLookupOk,
            0xa2 => FrameKind::SchemaById,
            0xa3 => FrameKind::SchemaVersion,
            0xa4 => FrameKind::SchemaVersions,
            0xa5 => FrameKind::SchemaSubjects,
            0xa6 => FrameKind::SchemaCheckOk,
            0xa7 => FrameKind::SchemaDeleted,
            0xa8 => FrameKind::SchemaConfig,
            0xa9 => FrameKind::SchemaConfigSet,
            0xaa => FrameKind::TopicSchemaPolicySet,
            0xab => FrameKind::TopicSchemaPolicy,
            0xff => FrameKind::Error,
            kind => return Err(DecodeError::UnknownFrameKind { kind }),
        })
    }

    /// Whether this is a cluster kind (`0x10..=0x1f` or `0x90..=0x9f`), carried as
    /// [`Payload::Cluster`].
    pub fn is_cluster(self) -> bool {
        matches!(self as u8, 0x10..=0x1f | 0x90..=0x9f)
    }

    /// Whether this is an authentication kind (`0x30..=0x3f` or `0xb0..=0xbf`), carried as
    /// [`Payload::Sasl`].
    pub fn is_sasl(self) -> bool {
        matches!(self as u8, 0x30..=0x3f | 0xb0..=0xbf)
    }

    /// Whether this is a schema registry kind (`0x20..=0x2f` or `0xa0..=0xaf`), carried as
    /// [`Payload::Schema`].
    pub fn is_schema(self) -> bool {
        matches!(self as u8, 0x20..=0x2f | 0xa0..=0xaf)
    }
}

/// `Hello`: the first request a client sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks ([`super::PROTOCOL_VERSION`]).
    pub version: u16,
    /// Free-form client id for logs and metrics.
    pub client_id: String,
}

/// `HelloOk`: the broker accepted the connection and the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    /// Protocol version the broker will speak.
    pub version: u16,
    /// The broker's id.
    pub broker_id: u32,
    /// The principal the broker derived from the client certificate.
    pub principal: String,
    /// Largest frame (length prefix value) the broker accepts.
    pub max_frame_size: u32,
    /// Largest record batch a `Produce` may carry (bytes); a larger one is answered
    /// `BATCH_TOO_LARGE`. Every stored batch is at most this large, so each can be fetched.
    pub max_batch_bytes: u32,
    /// Largest batches section of a `FetchOk`: a `Fetch` asking for more gets at most this
    /// much. At least [`Self::max_batch_bytes`], so one whole batch always fits.
    pub max_fetch_bytes: u32,
    /// Most idempotent batches one producer may have unanswered per partition: the
    /// broker recognises a retry only among the last this many batches.
    pub max_in_flight_per_partition: u16,
    /// Bytes of unfinished frames larger than 64 KiB one connection may be sending at
    /// once (summed over its streams); a frame beyond it is answered `RESOURCE_LIMIT`.
    pub max_unfinished_frame_bytes: u32,
    /// Bytes of responses (fetched batches, metadata) the broker holds for one
    /// connection; requests beyond it wait until the client reads its responses.
    pub max_response_bytes: u32,
    /// Behaviours the broker implements, one bit each ([`HelloOk::PER_PARTITION_EPOCHS`]);
    /// unknown bits are to be ignored.
    pub features: u32,
}

impl HelloOk {
    /// `features` bit: a batch whose epoch is older than its producer id's current epoch
    /// is first looked up among the partition's remembered batches (a retry is answered
    /// `duplicate` with its original offset) and only otherwise refused
    /// `INVALID_PRODUCER_EPOCH`, so a producer may switch epochs partition by partition.
    pub const PER_PARTITION_EPOCHS: u32 = 1;
}

/// Bytes of the `HelloOk` fields after `max_frame_size`.
const HELLO_OK_LIMITS_LEN: usize = 4 + 4 + 2 + 4 + 4 + 4;

/// `InitProducerId`: allocate a producer id, or bump the epoch of an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerId {
    /// -1 to allocate a new id; otherwise the id whose epoch to bump.
    pub producer_id: i64,
    /// -1 with a new id; otherwise the current epoch.
    pub producer_epoch: i16,
}

/// `InitProducerIdOk`: the id and epoch to stamp on batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProducerIdOk {
    /// Allocated producer id.
    pub producer_id: i64,
    /// Epoch to use (sequences restart at 0 in a new epoch).
    pub producer_epoch: i16,
}

/// `Metadata`: describe topics (an empty list means all topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Topic names; empty for all.
    pub topics: Vec<String>,
}

/// A broker in `MetadataOk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: u32,
    /// Host name or address clients should connect to.
    pub host: String,
    /// UDP port.
    pub port: u16,
}

/// A partition in `MetadataOk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: u32,
    /// Id of the broker leading this partition.
    pub leader: u32,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// Next offset to be assigned (high watermark).
    pub end_offset: i64,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// A topic in `MetadataOk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// `None` when found; `UnknownTopicOrPartition` or `AuthorizationFailed` otherwise.
    pub error: ErrorCode,
    /// Partitions, in index order.
    pub partitions: Vec<PartitionMetadata>,
}

/// `MetadataOk`: brokers and topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataOk {
    /// Known brokers.
    pub brokers: Vec<BrokerInfo>,
    /// Requested (or all) topics.
    pub topics: Vec<TopicMetadata>,
}

/// `CreateTopic` / `CreateTopicOk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    /// Topic name: 1–249 characters of `[A-Za-z0-9._-]`.
    pub topic: String,
    /// Partition count (>= 1).
    pub partitions: u32,
}

/// `Produce`: one record batch for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produce {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Acknowledgement level; with [`Acks::None`] the broker sends no response.
    pub acks: Acks,
    /// How long the broker may take to satisfy `acks` before answering
    /// `RequestTimedOut`; 0 means the broker's default.
    pub timeout_ms: u32,
    /// Exactly one record batch, the rest of the frame.
    pub batch: Bytes,
}

/// `ProduceResult`: the outcome of one `Produce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResult {
    /// `None` on success.
    pub error: ErrorCode,
    /// The batch was a retry of one already stored; `base_offset` is the original.
    pub duplicate: bool,
    /// Offset assigned to the first record, or -1 on error.
    pub base_offset: i64,
    /// Broker time of the append (ms since the Unix epoch), or -1.
    pub log_append_time: i64,
    /// Human-readable detail for errors; empty on success.
    pub message: String,
}

/// `Fetch`: read stored batches starting at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// First offset wanted.
    pub offset: i64,
    /// Soft limit on returned bytes; at least one whole batch is returned if any exists.
    pub max_bytes: u32,
}

/// `FetchOk`: stored batches, back to back, each whole and as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOk {
    /// Next offset to be assigned in the partition.
    pub high_watermark: i64,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// Zero or more whole batches; the first may start before the requested offset.
    pub batches: Bytes,
}

/// `Error`: a request other than `Produce` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// The body of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`InitProducerId`].
    InitProducerId(InitProducerId),
    /// See [`Metadata`].
    Metadata(Metadata),
    /// See [`CreateTopic`].
    CreateTopic(CreateTopic),
    /// See [`Produce`].
    Produce(Produce),
    /// See [`Fetch`].
    Fetch(Fetch),
    /// See [`HelloOk`].
    HelloOk(HelloOk),
    /// See [`InitProducerIdOk`].
    InitProducerIdOk(InitProducerIdOk),
    /// See [`MetadataOk`].
    MetadataOk(MetadataOk),
    /// See [`CreateTopic`].
    CreateTopicOk(CreateTopic),
    /// See [`ProduceResult`].
    ProduceResult(ProduceResult),
    /// See [`FetchOk`].
    FetchOk(FetchOk),
    /// See [`ErrorFrame`].
    Error(ErrorFrame),
    /// A cluster frame (kinds `0x10..=0x1f`, `0x90..=0x9f`): see [`super::cluster`].
    Cluster(ClusterPayload),
    /// An authentication frame (kinds `0x30..=0x3f`, `0xb0..=0xbf`): see [`super::sasl`].
    Sasl(SaslPayload),
    /// A schema registry frame (kinds `0x20..=0x2b`, `0xa0..=0xab`): see [`super::schema`].
    Schema(SchemaFrame),
}

/// A whole frame: correlation id and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request id chosen by the client and echoed in the response.
    pub correlation_id: u32,
    /// The body.
    pub payload: Payload,
}

/// The fixed part of a frame, readable before the body has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Value of the length prefix.
    pub length: usize,
    /// Raw kind byte (not yet validated).
    pub kind: u8,
    /// Correlation id.
    pub correlation_id: u32,
}

impl FrameHead {
    /// Reads the header. `Ok(None)` with fewer than [`FRAME_HEADER_LEN`] bytes.
    pub fn peek(buf: &[u8]) -> Result<Option<FrameHead>, DecodeError> {
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut r = Reader::new(buf);
        let length = r.u32("length")? as usize;
        if length < MIN_FRAME_LENGTH {
            return Err(DecodeError::FrameTooShort { len: length, min: MIN_FRAME_LENGTH });
        }
        Ok(Some(FrameHead { length, kind: r.u8("kind")?, correlation_id: r.u32("correlation_id")? }))
    }

    /// Total bytes of the frame including the length prefix.
    pub fn total_len(&self) -> usize {
        4 + self.length
    }
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad frame (correlation id {correlation_id:?}): {error}")]
pub struct FrameError {
    /// The correlation id, when the header was readable.
    pub correlation_id: Option<u32>,
    /// What was wrong.
    #[source]
    pub error: DecodeError,
    /// True when the bad frame's bytes were consumed and the next frame can be read;
    /// false when framing is lost (bad or oversized length) and the stream must close.
    pub resumable: bool,
}

impl FrameError {
    /// The wire error code that describes this failure.
    pub fn code(&self) -> ErrorCode {
        match self.error {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownFrameKind { .. } => ErrorCode::UnknownFrameKind,
            _ => ErrorCode::MalformedFrame,
        }
    }
}

impl Frame {
    /// Decodes one frame from the front of `buf`, advancing past it only on success or on
    /// a resumable error. `Ok(None)` means more bytes are needed; nothing is consumed.
    /// `max_frame` bounds the length prefix (at most [`MAX_FRAME_SIZE`]).
    pub fn decode(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
        let head = match FrameHead::peek(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(error) => return Err(FrameError { correlation_id: None, error, resumable: false }),
        };
        let max = max_frame.min(MAX_FRAME_SIZE);
        if head.length > max {
            return Err(FrameError {
                correlation_id: Some(head.correlation_id),
                error: DecodeError::FrameTooLarge { len: head.length, max },
                resumable: false,
            });
        }
        if buf.len() < head.total_len() {
            buf.reserve(head.total_len() - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(head.total_len());
        frame.advance(FRAME_HEADER_LEN);
        let body = frame.freeze();
        let fail = |error| FrameError { correlation_id: Some(head.correlation_id), error, resumable: true };
        let kind = FrameKind::from_u8(head.kind).map_err(fail)?;
        let payload = Payload::decode(kind, body).map_err(fail)?;
        Ok(Some(Frame { correlation_id: head.correlation_id, payload }))
    }

    /// Appends the encoded frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let body = self.payload.body_len();
        buf.reserve(FRAME_HEADER_LEN + body);
        buf.put_u32((MIN_FRAME_LENGTH + body) as u32);
        buf.put_u8(self.payload.kind() as u8);
        buf.put_u32(self.correlation_id);
        self.payload.encode_body(buf);
    }

    /// Exactly the number of bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.body_len()
    }
}

/// Encodes everything of a `Produce` frame except the batch: writing these bytes and then
/// the `batch_len` batch bytes gives exactly what [`Frame::encode`] would, without copying
/// the batch.
pub fn encode_produce_head(
    buf: &mut BytesMut,
    correlation_id: u32,
    topic: &str,
    partition: u32,
    acks: Acks,
    timeout_ms: u32,
    batch_len: usize,
) {
    let body = str16_len(topic) + 4 + 1 + 4 + batch_len;
    buf.reserve(FRAME_HEADER_LEN + body - batch_len);
    buf.put_u32((MIN_FRAME_LENGTH + body) as u32);
    buf.put_u8(FrameKind::Produce as u8);
    buf.put_u32(correlation_id);
    put_str16(buf, topic);
    buf.put_u32(partition);
    buf.put_u8(acks.as_u8());
    buf.put_u32(timeout_ms);
}

/// Encodes everything of a `FetchOk` frame except the batches: writing these bytes and
/// then the `batches_len` batch bytes gives exactly what [`Frame::encode`] would, so a
/// large fetch response is sent without copying its batches.
pub fn encode_fetch_ok_head(
    buf: &mut BytesMut,
    correlation_id: u32,
    high_watermark: i64,
    log_start_offset: i64,
    batches_len: usize,
) {
    buf.reserve(FRAME_HEADER_LEN + 16);
    buf.put_u32((MIN_FRAME_LENGTH + 16 + batches_len) as u32);
    buf.put_u8(FrameKind::FetchOk as u8);
    buf.put_u32(correlation_id);
    buf.put_i64(high_watermark);
    buf.put_i64(log_start_offset);
}

fn put_error(buf: &mut BytesMut, code: ErrorCode) {
    buf.put_u16(code.as_u16());
}

impl Payload {
    /// The kind byte this payload is sent with.
    pub fn kind(&self) -> FrameKind {
        match self {
            Payload::Hello(_) => FrameKind::Hello,
            Payload::InitProducerId(_) => FrameKind::InitProducerId,
            Payload::Metadata(_) => FrameKind::Metadata,
            Payload::CreateTopic(_) => FrameKind::CreateTopic,
            Payload::Produce(_) => FrameKind::Produce,
            Payload::Fetch(_) => FrameKind::Fetch,
            Payload::HelloOk(_) => FrameKind::HelloOk,
            Payload::InitProducerIdOk(_) => FrameKind::InitProducerIdOk,
            Payload::MetadataOk(_) => FrameKind::MetadataOk,
            Payload::CreateTopicOk(_) => FrameKind::CreateTopicOk,
            Payload::ProduceResult(_) => FrameKind::ProduceResult,
            Payload::FetchOk(_) => FrameKind::FetchOk,
            Payload::Error(_) => FrameKind::Error,
            Payload::Cluster(c) => c.kind(),
            Payload::Sasl(a) => a.kind(),
            Payload::Schema(s) => FrameKind::from_u8(s.kind()).expect("every schema frame kind is a FrameKind"),
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Payload::Hello(h) => 2 + str16_len(&h.client_id),
            Payload::InitProducerId(_) | Payload::InitProducerIdOk(_) => 10,
            Payload::Metadata(m) => 2 + m.topics.iter().map(|t| str16_len(t)).sum::<usize>(),
            Payload::CreateTopic(c) | Payload::CreateTopicOk(c) => str16_len(&c.topic) + 4,
            Payload::Produce(p) => str16_len(&p.topic) + 4 + 1 + 4 + p.batch.len(),
            Payload::Fetch(f) => str16_len(&f.topic) + 4 + 8 + 4,
            Payload::HelloOk(h) => 2 + 4 + str16_len(&h.principal) + 4 + HELLO_OK_LIMITS_LEN,
            Payload::MetadataOk(m) => {
                2 + m.brokers.iter().map(|b| 4 + str16_len(&b.host) + 2).sum::<usize>()
                    + 2
                    + m.topics.iter().map(|t| str16_len(&t.name) + 2 + 4 + t.partitions.len() * 32).sum::<usize>()
            }
            Payload::ProduceResult(p) => 2 + 1 + 8 + 8 + str16_len(&p.message),
            Payload::FetchOk(f) => 8 + 8 + f.batches.len(),
            Payload::Error(e) => 2 + str16_len(&e.message),
            Payload::Cluster(c) => c.body_len(),
            Payload::Sasl(a) => a.body_len(),
            Payload::Schema(s) => s.body_len(),
        }
    }

    fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            Payload::Hello(h) => {
                buf.put_u16(h.version);
                put_str16(buf, &h.client_id);
            }
            Payload::InitProducerId(InitProducerId { producer_id, producer_epoch })
            | Payload::InitProducerIdOk(InitProducerIdOk { producer_id, producer_epoch }) => {
                buf.put_i64(*producer_id);
                buf.put_i16(*producer_epoch);
            }
            Payload::Metadata(m) => {
                buf.put_u16(m.topics.len() as u16);
                for t in &m.topics {
                    put_str16(buf, t);
                }
            }
            Payload::CreateTopic(c) | Payload::CreateTopicOk(c) => {
                put_str16(buf, &c.topic);
                buf.put_u32(c.partitions);
            }
            Payload::Produce(p) => {
                put_str16(buf, &p.topic);
                buf.put_u32(p.partition);
                buf.put_u8(p.acks.as_u8());
                buf.put_u32(p.timeout_ms);
                buf.put_slice(&p.batch);
            }
            Payload::Fetch(f) => {
                put_str16(buf, &f.topic);
                buf.put_u32(f.partition);
                buf.put_i64(f.offset);
                buf.put_u32(f.max_bytes);
            }
            Payload::HelloOk(h) => {
                buf.put_u16(h.version);
                buf.put_u32(h.broker_id);
                put_str16(buf, &h.principal);
                buf.put_u32(h.max_frame_size);
                buf.put_u32(h.max_batch_bytes);
                buf.put_u32(h.max_fetch_bytes);
                buf.put_u16(h.max_in_flight_per_partition);
                buf.put_u32(h.max_unfinished_frame_bytes);
                buf.put_u32(h.max_response_bytes);
                buf.put_u32(h.features);
            }
            Payload::MetadataOk(m) => {
                buf.put_u16(m.brokers.len() as u16);
                for b in &m.brokers {
                    buf.put_u32(b.id);
                    put_str16(buf, &b.host);
                    buf.put_u16(b.port);
                }
                buf.put_u16(m.topics.len() as u16);
                for t in &m.topics {
                    put_str16(buf, &t.name);
                    put_error(buf, t.error);
                    buf.put_u32(t.partitions.len() as u32);
                    for p in &t.partitions {
                        buf.put_u32(p.partition);
                        buf.put_u32(p.leader);
                        buf.put_i64(p.log_start_offset);
                        buf.put_i64(p.end_offset);
                        buf.put_u64(p.size_bytes);
                    }
                }
            }
            Payload::ProduceResult(p) => {
                put_error(buf, p.error);
                buf.put_u8(u8::from(p.duplicate));
                buf.put_i64(p.base_offset);
                buf.put_i64(p.log_append_time);
                put_str16(buf, &p.message);
            }
            Payload::FetchOk(f) => {
                buf.put_i64(f.high_watermark);
                buf.put_i64(f.log_start_offset);
                buf.put_slice(&f.batches);
            }
            Payload::Error(e) => {
                put_error(buf, e.code);
                put_str16(buf, &e.message);
            }
            Payload::Cluster(c) => c.encode_body(buf),
            Payload::Sasl(a) => a.encode_body(buf),
            Payload::Schema(s) => s.encode_body(buf),
        }
    }

    /// Decodes a body of `kind`; `body` is exactly the bytes after the frame header.
    pub fn decode(kind: FrameKind, body: Bytes) -> Result<Payload, DecodeError> {
        let mut r = Reader::new(&body);
        let payload = match kind {
            FrameKind::Hello => Payload::Hello(Hello { version: r.u16("version")?, client_id: r.str16("client_id")? }),
            FrameKind::InitProducerId => Payload::InitProducerId(InitProducerId {
                producer_id: r.i64("producer_id")?,
                producer_epoch: r.i16("producer_epoch")?,
            }),
            FrameKind::InitProducerIdOk => Payload::InitProducerIdOk(InitProducerIdOk {
                producer_id: r.i64("producer_id")?,
                producer_epoch: r.i16("producer_epoch")?,
            }),
            FrameKind::Metadata => {
                let n = r.u16("topic_count")?;
                let topics = (0..n).map(|_| r.str16("topic")).collect::<Result<_, _>>()?;
                Payload::Metadata(Metadata { topics })
            }
            FrameKind::CreateTopic | FrameKind::CreateTopicOk => {
                let c = CreateTopic { topic: r.str16("topic")?, partitions: r.u32("partitions")? };
                if kind == FrameKind::CreateTopic {
                    Payload::CreateTopic(c)
                } else {
                    Payload::CreateTopicOk(c)
                }
            }
            FrameKind::Produce => {
                let topic = r.str16("topic")?;
                let partition = r.u32("partition")?;
                let acks = Acks::from_u8(r.u8("acks")?)?;
                let timeout_ms = r.u32("timeout_ms")?;
                let batch = body.slice(r.position()..);
                return Ok(Payload::Produce(Produce { topic, partition, acks, timeout_ms, batch }));
            }
            FrameKind::Fetch => Payload::Fetch(Fetch {
                topic: r.str16("topic")?,
                partition: r.u32("partition")?,
                offset: r.i64("offset")?,
                max_bytes: r.u32("max_bytes")?,
            }),
            FrameKind::HelloOk => {
                let hello = HelloOk {
                    version: r.u16("version")?,
                    broker_id: r.u32("broker_id")?,
                    principal: r.str16("principal")?,
                    max_frame_size: r.u32("max_frame_size")?,
                    max_batch_bytes: r.u32("max_batch_bytes")?,
                    max_fetch_bytes: r.u32("max_fetch_bytes")?,
                    max_in_flight_per_partition: r.u16("max_in_flight_per_partition")?,
                    max_unfinished_frame_bytes: r.u32("max_unfinished_frame_bytes")?,
                    max_response_bytes: r.u32("max_response_bytes")?,
                    features: r.u32("features")?,
                };
                // Later versions append fields: bytes after the known ones are ignored.
                return Ok(Payload::HelloOk(hello));
            }
            FrameKind::MetadataOk => {
                let nb = r.u16("broker_count")?;
                let brokers = (0..nb)
                    .map(|_| Ok(BrokerInfo { id: r.u32("broker_id")?, host: r.str16("host")?, port: r.u16("port")? }))
                    .collect::<Result<_, DecodeError>>()?;
                let nt = r.u16("topic_count")?;
                // Each topic takes at least 8 bytes: do not let a count allocate ahead.
                let mut topics = Vec::with_capacity((nt as usize).min(r.remaining() / 8));
                for _ in 0..nt {
                    let name = r.str16("topic")?;
                    let error = ErrorCode::from_u16(r.u16("error")?)?;
                    let np = r.u32("partition_count")? as usize;
                    if np.saturating_mul(32) > r.remaining() {
                        return Err(DecodeError::UnexpectedEof {
                            field: "partitions",
                            offset: r.position(),
                            need: np.saturating_mul(32),
                            have: r.remaining(),
                        });
                    }
                    let partitions = (0..np)
                        .map(|_| {
                            Ok(PartitionMetadata {
                                partition: r.u32("partition")?,
                                leader: r.u32("leader")?,
                                log_start_offset: r.i64("log_start_offset")?,
                                end_offset: r.i64("end_offset")?,
                                size_bytes: r.u64("size_bytes")?,
                            })
                        })
                        .collect::<Result<_, DecodeError>>()?;
                    topics.push(TopicMetadata { name, error, partitions });
                }
                Payload::MetadataOk(MetadataOk { brokers, topics })
            }
            FrameKind::ProduceResult => {
                let error = ErrorCode::from_u16(r.u16("error")?)?;
                let flags = r.u8("flags")?;
                if flags & !1 != 0 {
                    return Err(DecodeError::InvalidValue { field: "flags", value: flags as i64 });
                }
                Payload::ProduceResult(ProduceResult {
                    error,
                    duplicate: flags & 1 == 1,
                    base_offset: r.i64("base_offset")?,
                    log_append_time: r.i64("log_append_time")?,
                    message: r.str16("message")?,
                })
            }
            FrameKind::FetchOk => {
                let high_watermark = r.i64("high_watermark")?;
                let log_start_offset = r.i64("log_start_offset")?;
                let batches = body.slice(r.position()..);
                return Ok(Payload::FetchOk(FetchOk { high_watermark, log_start_offset, batches }));
            }
            FrameKind::Error => {
                Payload::Error(ErrorFrame { code: ErrorCode::from_u16(r.u16("error")?)?, message: r.str16("message")? })
            }
            FrameKind::ReplicaFetch
            | FrameKind::OffsetForLeaderEpoch
            | FrameKind::DescribeCluster
            | FrameKind::DescribeTopics
            | FrameKind::CreateReplicatedTopic
            | FrameKind::AlterPartitions
            | FrameKind::ReplicaFetchOk
            | FrameKind::OffsetForLeaderEpochOk
            | FrameKind::DescribeClusterOk
            | FrameKind::DescribeTopicsOk
            | FrameKind::CreateReplicatedTopicOk
            | FrameKind::AlterPartitionsOk
            | FrameKind::NotLeader => return ClusterPayload::decode(kind, body).map(Payload::Cluster),
            FrameKind::SaslStart | FrameKind::SaslContinue | FrameKind::SaslStartOk | FrameKind::SaslContinueOk => {
                return SaslPayload::decode(kind, &body).map(Payload::Sasl)
            }
            FrameKind::SchemaRegister
            | FrameKind::SchemaLookup
            | FrameKind::SchemaGetById
            | FrameKind::SchemaGetVersion
            | FrameKind::SchemaListVersions
            | FrameKind::SchemaListSubjects
            | FrameKind::SchemaCheck
            | FrameKind::SchemaDelete
            | FrameKind::SchemaGetConfig
            | FrameKind::SchemaSetConfig
            | FrameKind::SetTopicSchemaPolicy
            | FrameKind::GetTopicSchemaPolicy
            | FrameKind::SchemaRegisterOk
            | FrameKind::SchemaLookupOk
            | FrameKind::SchemaById
            | FrameKind::SchemaVersion
            | FrameKind::SchemaVersions
            | FrameKind::SchemaSubjects
            | FrameKind::SchemaCheckOk
            | FrameKind::SchemaDeleted
            | FrameKind::SchemaConfig
            | FrameKind::SchemaConfigSet
            | FrameKind::TopicSchemaPolicySet
            | FrameKind::TopicSchemaPolicy => return SchemaFrame::decode(kind as u8, &body).map(Payload::Schema),
        };
        r.finish("frame body")?;
        Ok(payload)
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
