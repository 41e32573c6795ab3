//! The producer's public error: what went wrong, whether trying again can help, and
//! whether the record may have been written anyway.

use std::fmt;
use std::sync::Arc;

use super::record::ProducerRecord;
use crate::protocol::ErrorCode;
use crate::transport::TransportError;

/// Whether a failed record may be in the log (librdkafka's message status).
///
/// The producer keeps, for every batch, whether any attempt may have stored it: an attempt
/// sent without a definite answer (connection or stream lost, no answer in time) or
/// answered "appended but not confirmed" may have; a refusal given before the broker's
/// duplicate check says nothing about earlier attempts; only an answer given after that
/// check (acknowledged, duplicate, out of order, unknown producer) settles it. With
/// idempotence such a batch is resent until the broker settles it, so a record is reported
/// failed with [`Persistence::PossiblyPersisted`] only when the producer had to give up on
/// it (delivery timeout, close deadline, a refusal that retrying cannot cure, fencing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persistence {
    /// Certainly not in the log: never sent, or every attempt was refused before it could
    /// be appended (and a batch behind one known not to be stored cannot be stored either).
    NotPersisted,
    /// Maybe in the log: some attempt went out without a definite answer (connection lost,
    /// no answer in time, delivery timeout while in flight), or was appended but not
    /// confirmed (`REQUEST_TIMED_OUT` / `STORAGE_ERROR` with an offset). Read the partition
    /// back (or send again with idempotence off and accept a duplicate) to find out.
    PossiblyPersisted,
    /// In the log although the delivery is reported failed: an answer that the batch was
    /// appended (and synced) but the requested acknowledgement could not be given, e.g.
    /// replication falling short after the append in a cluster. A single qwire broker
    /// never gives such an answer, so today's producer does not report this status; match
    /// it anyway, it is part of the contract.
    Persisted,
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persistence::NotPersisted => "not persisted",
            Persistence::PossiblyPersisted => "possibly persisted",
            Persistence::Persisted => "persisted",
        })
    }
}

/// The category of a producer error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Buffer memory stayed full for `max_block` (or immediately, for `try_send`).
    BufferFull,
    /// The record is larger than `max_record_size` or buffer memory.
    RecordTooLarge,
    /// The record cannot be placed: unknown topic or partition, or the partitioner refused.
    InvalidRecord,
    /// The broker refused the request with this code.
    Broker(ErrorCode),
    /// No broker could be reached, or the connection broke.
    Transport,
    /// The TLS handshake was refused (certificate problems). Records for that broker fail at
    /// once; after `circuit_breaker_recovery` the producer tries once more with the
    /// certificate files read again (a rotated certificate is picked up).
    Tls,
    /// SASL authentication failed on this side (the credentials cannot be used, the token
    /// provider failed, or the broker could not prove it holds the user's credentials). A
    /// refusal by the broker is [`ErrorKind::Broker`] with its authentication code. Either
    /// way records for that broker fail at once; after `circuit_breaker_recovery` the
    /// producer tries once more (asking the token provider again).
    Authentication,
    /// The per-broker circuit breaker is open: failing fast until one trial connection after
    /// `circuit_breaker_recovery` succeeds.
    CircuitOpen,
    /// The delivery timeout passed before the record was acknowledged (queued, waiting to
    /// be resent, or in flight: see the persistence).
    DeliveryTimeout,
    /// The producer was closed or the record purged before delivery.
    Closed,
    /// The producer id was fenced by a newer instance (fatal for this producer: everything
    /// it held fails with this, and every later record is refused with it at once).
    Fenced,
    /// The configuration is invalid (from `build`).
    Config,
    /// The value does not match its schema (the message names the path and the rule), or
    /// its schema could not be resolved from the registry. Nothing was sent.
    Schema,
}

/// A produce failure.
#[derive(Debug, Clone)]
pub struct ProduceError {
    kind: ErrorKind,
    persistence: Persistence,
    message: String,
    source: Option<Arc<TransportError>>,
}

impl ProduceError {
    pub(crate) fn new(kind: ErrorKind, persistence: Persistence, message: impl Into<String>) -> Self {
        ProduceError { kind, persistence, message: message.into(), source: None }
    }

    pub(crate) fn transport(e: TransportError, persistence: Persistence) -> Self {
        let kind = match &e {
            TransportError::TlsRejected { .. } => ErrorKind::Tls,
            TransportError::Sasl { .. } => ErrorKind::Authentication,
            TransportError::Broker { code, .. } => ErrorKind::Broker(*code),
            _ => ErrorKind::Transport,
        };
        ProduceError { kind, persistence, message: e.to_string(), source: Some(Arc::new(e)) }
    }

    pub(crate) fn with_persistence(mut self, p: Persistence) -> Self {
        self.persistence = p;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the record may be in the log.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }

    /// Whether sending the same record again may succeed. (The producer already retried
    /// retriable failures until the delivery timeout; this is for the application's own
    /// policy.)
    pub fn is_retriable(&self) -> bool {
        match self.kind {
            ErrorKind::BufferFull | ErrorKind::Transport | ErrorKind::CircuitOpen | ErrorKind::DeliveryTimeout => true,
            ErrorKind::Broker(code) => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether the producer instance is unusable after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self.kind, ErrorKind::Fenced)
    }

    /// The description without the persistence suffix that `Display` adds.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.kind {
            ErrorKind::Broker(c) => Some(c),
            _ => None,
        }
    }
}

impl fmt::Display for ProduceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.persistence)
    }
}

impl std::error::Error for ProduceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A send refused before the record entered the producer: the record is handed back.
#[derive(Debug)]
pub struct SendError {
    /// Why.
    pub error: ProduceError,
    /// The record, untouched.
    pub record: ProducerRecord,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record for topic '{}' not sent: {}", self.record.topic, self.error)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for ProduceError {
    fn from(e: SendError) -> Self {
        e.error
    }
}
