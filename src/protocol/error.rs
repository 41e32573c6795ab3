//! Wire-level errors: what a decoder can find wrong with bytes, and the error codes that
//! travel in response frames.

use std::fmt;

/// Why a sequence of bytes is not a valid qwire frame, batch or record.
///
/// "Not enough bytes yet" is never an error: decoders return `Ok(None)` for that.
/// Every variant says which field was being read so a log line points at the fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a field that the enclosing length said was there.
    #[error("unexpected end of input reading {field} at offset {offset}: need {need} bytes, have {have}")]
    UnexpectedEof {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the field within the structure being decoded.
        offset: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes that were left.
        have: usize,
    },
    /// A frame's length prefix exceeds the negotiated or hard maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Length announced by the prefix.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A frame's length prefix is too small to hold the frame header.
    #[error("frame length {len} is shorter than the {min}-byte minimum")]
    FrameTooShort {
        /// Length announced by the prefix.
        len: usize,
        /// The minimum length (kind + correlation id).
        min: usize,
    },
    /// The frame kind byte is not one this version knows.
    #[error("unknown frame kind 0x{kind:02x}")]
    UnknownFrameKind {
        /// The kind byte received.
        kind: u8,
    },
    /// A field holds a value outside its allowed set (an enum discriminant, a flag bit).
    #[error("invalid value {value} for {field}")]
    InvalidValue {
        /// The field being read.
        field: &'static str,
        /// The value found, widened to i64 for display.
        value: i64,
    },
    /// A string field is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// A varint ran past 5 (varint) or 10 (varlong) bytes.
    #[error("varint for {field} is longer than {max_bytes} bytes")]
    VarintOverflow {
        /// The field being read.
        field: &'static str,
        /// The most bytes a value of that width may take.
        max_bytes: usize,
    },
    /// Bytes were left over after a structure whose length is fixed by a prefix.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A record batch's CRC-32C does not match its contents.
    #[error("record batch CRC mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    CrcMismatch {
        /// CRC carried by the batch.
        stored: u32,
        /// CRC computed over the bytes received.
        computed: u32,
    },
    /// The batch magic byte is not a supported format version.
    #[error("unsupported record batch magic {magic}")]
    UnsupportedMagic {
        /// The magic byte found.
        magic: u8,
    },
    /// A compressed records section could not be decompressed.
    #[error("{codec} decompression failed: {reason}")]
    Decompression {
        /// The codec named by the batch attributes.
        codec: &'static str,
        /// The decoder's own message.
        reason: String,
    },
    /// A decompressed records section would exceed the allowed size.
    #[error("decompressed records exceed the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The batch header's record count disagrees with the records found.
    #[error("batch claims {claimed} records but holds {found}")]
    RecordCountMismatch {
        /// Count in the header.
        claimed: u32,
        /// Records actually decoded.
        found: u32,
    },
}

/// Error codes carried by response frames (`Error` frames and the produce response).
///
/// Codes are part of the wire format: a code, once assigned, is never reused for
/// another meaning. `PROTOCOL.md` lists them with the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// An unexpected broker-side failure. Not retriable.
    Unknown = 1,
    /// The frame could not be decoded. Not retriable.
    MalformedFrame = 2,
    /// The frame exceeds the broker's maximum frame size. Not retriable.
    FrameTooLarge = 3,
    /// The frame kind is unknown to the broker. Not retriable.
    UnknownFrameKind = 4,
    /// The protocol version in `Hello` is not supported. Not retriable.
    UnsupportedVersion = 5,
    /// The record batch failed its CRC, structural or record check. Not retriable: QUIC
    /// delivers bytes unaltered (AEAD), so the same batch would fail again; the sender's
    /// encoder is at fault.
    CorruptBatch = 6,
    /// The topic or partition does not exist. Retriable (metadata may be stale).
    UnknownTopicOrPartition = 7,
    /// `CreateTopic` for a topic that exists. Not retriable.
    TopicAlreadyExists = 8,
    /// A partition count of zero or above the broker's limit. Not retriable.
    InvalidPartitions = 9,
    /// The principal lacks the permission for this topic. Not retriable.
    AuthorizationFailed = 10,
    /// The batch exceeds the broker's maximum batch size. Not retriable.
    BatchTooLarge = 11,
    /// The batch's sequence does not follow the last one acked for its producer. The
    /// producer must drain and bump its epoch.
    OutOfOrderSequence = 12,
    /// The producer epoch is not the current epoch of its producer id: older (this
    /// producer was fenced by a newer epoch) or never issued. Fatal for the producer
    /// instance; a bump (`InitProducerId`) must present the current epoch.
    InvalidProducerEpoch = 13,
    /// The broker holds no state for this producer id on the partition and the batch
    /// does not start at sequence 0. The producer must bump its epoch.
    UnknownProducerId = 14,
    /// A request is well-formed but not acceptable (a response kind sent as a request,
    /// negative epoch or sequence, a producer id this broker did not issue). Undecodable
    /// fields such as an unknown acks value are `MalformedFrame`. Not retriable.
    InvalidRequest = 15,
    /// The broker could not write or sync the log (disk full, I/O error). Retriable.
    StorageError = 16,
    /// The request did not complete within its timeout. Retriable.
    RequestTimedOut = 17,
    /// The broker is shutting down. Retriable (on another broker or after restart).
    BrokerShuttingDown = 18,
    /// The topic name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    InvalidTopicName = 19,
    /// A connection or stream limit was reached. Retriable after back-off.
    ResourceLimit = 20,
    /// A fetch offset outside `[log_start, end]`. Not retriable.
    OffsetOutOfRange = 21,
    /// A stored batch failed its CRC when read back. Not retriable.
    CorruptStoredData = 22,
    /// An idempotent batch or an epoch bump names a producer id this broker did not issue
    /// (never handed out, including ids reserved but not yet issued), issued to another
    /// principal, or no longer remembers. Not retriable: get a new id with
    /// `InitProducerId(-1, -1)`.
    InvalidProducerId = 23,
    /// Creating the topic would exceed the broker's topic limit (`max_topics`). Not
    /// retriable.
    TopicLimitReached = 24,
    /// Cluster: this broker does not lead the partition. Retriable after a metadata
    /// refresh; the `NotLeader` frame names the leader when known (KIP-951).
    NotLeader = 30,
    /// Cluster: acks=all refused before the append because the in-sync set is smaller
    /// than the topic's `min_insync_replicas`. Nothing was written. Retriable.
    NotEnoughReplicas = 31,
    /// Cluster: the batch was appended on the leader, but the in-sync set fell below
    /// `min_insync_replicas` before it was replicated. An idempotent retry is safe.
    /// Retriable.
    NotEnoughReplicasAfterAppend = 32,
    /// Cluster: the request's leader epoch is older than this broker's: the requester
    /// must refresh its metadata.
    FencedLeaderEpoch = 33,
    /// Cluster: the request's leader epoch is newer than this broker knows yet.
    /// Retriable.
    UnknownLeaderEpoch = 34,
    /// Cluster: a replication factor of 0 or above the live brokers, or a
    /// `min_insync_replicas` of 0 or above the replication factor. Not retriable.
    InvalidReplicationFactor = 35,
    /// Cluster: the metadata store cannot be reached or this broker's view of it is
    /// stale. Retriable.
    MetadataUnavailable = 36,
    /// Schema registry: the subject has no (non-deleted) version. Not retriable.
    SchemaSubjectNotFound = 40,
    /// Schema registry: no such version of the subject. Not retriable.
    SchemaVersionNotFound = 41,
    /// Schema registry: no schema with that id, or the text is not registered under the
    /// subject. Not retriable.
    SchemaNotFound = 42,
    /// Schema registry: the text does not parse as its type, uses references, or the
    /// subject name is invalid. Not retriable.
    InvalidSchema = 43,
    /// Schema registry: the schema breaks the subject's compatibility level. Not retriable.
    IncompatibleSchema = 44,
    /// Schema registry: an invalid version or compatibility level. Not retriable.
    SchemaInvalidArgument = 45,
    /// Schema registry: a delete out of order (soft-deleting twice, or a permanent delete
    /// before a soft one). Not retriable.
    SchemaDeleteRefused = 46,
    /// Schema registry: the subject has no compatibility level of its own. Not retriable.
    SchemaConfigNotFound = 47,
    /// Produce to a topic whose schema policy is `enforce`: a record carries no schema id
    /// registered under the topic's subject. Not retriable.
    SchemaRequired = 48,
    /// Produce to an `enforce` topic with payload validation on: a value does not match
    /// its schema. Not retriable.
    InvalidRecord = 49,
    /// Authentication: the SASL credentials were not accepted. The one answer to every
    /// credential failure (unknown user, wrong password or proof, replayed message, bad or
    /// expired token), so that users cannot be enumerated. Not retriable.
    AuthenticationFailed = 50,
    /// Authentication: the broker does not offer this SASL mechanism; the message lists
    /// those it does. Not retriable.
    UnsupportedSaslMechanism = 51,
    /// Authentication: a request other than `Hello`, `SaslStart` or `SaslContinue` on a
    /// connection that has not authenticated. Also the close code of a connection that did
    /// not authenticate in time. Not retriable.
    AuthenticationRequired = 52,
    /// Authentication: a SASL frame that does not fit the connection's state
    /// (`SaslContinue` with no exchange, SASL on a certificate connection). Not retriable.
    IllegalSaslState = 53,
    /// Authentication: too many failures from this source address; the credentials were
    /// not checked. Retriable after a back-off.
    AuthenticationThrottled = 54,
    /// Authentication: the SASL session expired. Also the close code of a connection whose
    /// session expired without re-authentication. Not retriable on this connection.
    SessionExpired = 55,
}

impl ErrorCode {
    /// Every defined code, in numeric order.
    pub const ALL: [ErrorCode; 48] = [
        ErrorCode::None,
        ErrorCode::Unknown,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownFrameKind,
        ErrorCode::UnsupportedVersion,
        ErrorCode::CorruptBatch,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::AuthorizationFailed,
        ErrorCode::BatchTooLarge,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::UnknownProducerId,
        ErrorCode::InvalidRequest,
        ErrorCode::StorageError,
        ErrorCode::RequestTimedOut,
        ErrorCode::BrokerShuttingDown,
        ErrorCode::InvalidTopicName,
        ErrorCode::ResourceLimit,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptStoredData,
        ErrorCode::InvalidProducerId,
        ErrorCode::TopicLimitReached,
        ErrorCode::NotLeader,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::MetadataUnavailable,
        ErrorCode::SchemaSubjectNotFound,
        ErrorCode::SchemaVersionNotFound,
        ErrorCode::SchemaNotFound,
        ErrorCode::InvalidSchema,
        ErrorCode::IncompatibleSchema,
        ErrorCode::SchemaInvalidArgument,
        ErrorCode::SchemaDeleteRefused,
        ErrorCode::SchemaConfigNotFound,
        ErrorCode::SchemaRequired,
        ErrorCode::InvalidRecord,
        ErrorCode::AuthenticationFailed,
        ErrorCode::UnsupportedSaslMechanism,
        ErrorCode::AuthenticationRequired,
        ErrorCode::IllegalSaslState,
        ErrorCode::AuthenticationThrottled,
        ErrorCode::SessionExpired,
    ];

    /// The numeric wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Parses a wire value; unknown values are rejected.
    pub fn from_u16(v: u16) -> Result<Self, DecodeError> {
        // Codes are allocated in ranges per feature, so the table has gaps.
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_u16() == v)
            .ok_or(DecodeError::InvalidValue { field: "error_code", value: v as i64 })
    }

    /// Whether a client may retry the same request after seeing this code.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::UnknownTopicOrPartition
                | ErrorCode::StorageError
                | ErrorCode::RequestTimedOut
                | ErrorCode::BrokerShuttingDown
                | ErrorCode::ResourceLimit
                | ErrorCode::NotLeader
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotEnoughReplicasAfterAppend
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::MetadataUnavailable
                | ErrorCode::AuthenticationThrottled
        )
    }

    /// Whether this is an authentication code (50–59).
    pub fn is_authentication(self) -> bool {
        (50..=59).contains(&self.as_u16())
    }

    /// A short stable name, as used in logs and `PROTOCOL.md`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::UnknownFrameKind => "UNKNOWN_FRAME_KIND",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::CorruptBatch => "CORRUPT_BATCH",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::AuthorizationFailed => "AUTHORIZATION_FAILED",
            ErrorCode::BatchTooLarge => "BATCH_TOO_LARGE",
            ErrorCode::OutOfOrderSequence => "OUT_OF_ORDER_SEQUENCE",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::UnknownProducerId => "UNKNOWN_PRODUCER_ID",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::StorageError => "STORAGE_ERROR",
            ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            ErrorCode::BrokerShuttingDown => "BROKER_SHUTTING_DOWN",
            ErrorCode::InvalidTopicName => "INVALID_TOPIC_NAME",
            ErrorCode::ResourceLimit => "RESOURCE_LIMIT",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::CorruptStoredData => "CORRUPT_STORED_DATA",
            ErrorCode::InvalidProducerId => "INVALID_PRODUCER_ID",
            ErrorCode::TopicLimitReached => "TOPIC_LIMIT_REACHED",
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            ErrorCode::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ErrorCode::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ErrorCode::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::MetadataUnavailable => "METADATA_UNAVAILABLE",
            ErrorCode::SchemaSubjectNotFound => "SCHEMA_SUBJECT_NOT_FOUND",
            ErrorCode::SchemaVersionNotFound => "SCHEMA_VERSION_NOT_FOUND",
            ErrorCode::SchemaNotFound => "SCHEMA_NOT_FOUND",
            ErrorCode::InvalidSchema => "INVALID_SCHEMA",
            ErrorCode::IncompatibleSchema => "INCOMPATIBLE_SCHEMA",
            ErrorCode::SchemaInvalidArgument => "SCHEMA_INVALID_ARGUMENT",
            ErrorCode::SchemaDeleteRefused => "SCHEMA_DELETE_REFUSED",
            ErrorCode::SchemaConfigNotFound => "SCHEMA_CONFIG_NOT_FOUND",
            ErrorCode::SchemaRequired => "SCHEMA_REQUIRED",
            ErrorCode::InvalidRecord => "INVALID_RECORD",
            ErrorCode::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorCode::UnsupportedSaslMechanism => "UNSUPPORTED_SASL_MECHANISM",
            ErrorCode::AuthenticationRequired => "AUTHENTICATION_REQUIRED",
            ErrorCode::IllegalSaslState => "ILLEGAL_SASL_STATE",
            ErrorCode::AuthenticationThrottled => "AUTHENTICATION_THROTTLED",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md's table of error codes says what the code does: every code, its name,
    /// and whether it is retriable.
    #[test]
    fn the_protocol_document_lists_every_code_as_the_code_defines_it() {
        let doc = include_str!("../../PROTOCOL.md");
        let start = doc.find("\n## 12. Error codes").expect("section 12");
        let end = start + doc[start..].find("\n## 13.").expect("section 13");
        let rows: Vec<(u16, &str, bool)> = doc[start..end]
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                // | code | `NAME` | meaning | retriable |
                let code = cells.get(1)?.parse::<u16>().ok()?;
                let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code, name, cells.get(4)?.starts_with("yes")))
            })
            .collect();
        for c in ErrorCode::ALL {
            let row = rows.iter().find(|r| r.0 == c.as_u16());
            let Some(&(_, name, retriable)) = row else { panic!("PROTOCOL.md has no row for {c}") };
            assert_eq!(c.name(), name, "code {}", c.as_u16());
            assert_eq!(c.is_retriable(), retriable, "{c}: PROTOCOL.md says retriable = {retriable}");
        }
        assert_eq!(rows.len(), ErrorCode::ALL.len(), "{rows:?}");
    }

    #[test]
    fn codes_are_ascending_unique_and_round_trip() {
        for w in ErrorCode::ALL.windows(2) {
            assert!(w[0].as_u16() < w[1].as_u16(), "{} before {}", w[0], w[1]);
        }
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()).unwrap(), code);
        }
        let known: std::collections::HashSet<u16> = ErrorCode::ALL.iter().map(|c| c.as_u16()).collect();
        for v in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(v).is_ok(), known.contains(&v), "{v}");
        }
    }

    #[test]
    fn cluster_codes_are_in_their_range() {
        let cluster = [
            (ErrorCode::NotLeader, 30, true),
            (ErrorCode::NotEnoughReplicas, 31, true),
            (ErrorCode::NotEnoughReplicasAfterAppend, 32, true),
            (ErrorCode::FencedLeaderEpoch, 33, false),
            (ErrorCode::UnknownLeaderEpoch, 34, true),
            (ErrorCode::InvalidReplicationFactor, 35, false),
            (ErrorCode::MetadataUnavailable, 36, true),
        ];
        for (code, v, retriable) in cluster {
            assert_eq!(code.as_u16(), v);
            assert_eq!(code.is_retriable(), retriable, "{code}");
        }
    }
}
