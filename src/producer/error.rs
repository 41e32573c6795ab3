//! The producer's public error: what went wrong, whether trying again can help, and
//! whether the record may have been written anyway.

use std::fmt;
use std::sync::Arc;

use super::record::ProducerRecord;
use crate::protocol::ErrorCode;
use crate::transport::TransportError;

/// Whether a failed record may be in the log (librdkafka's message status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persistence {
    /// Certainly not written: never sent, or the broker refused it before appending.
    NotPersisted,
    /// Maybe written: sent, but no definite answer (connection lost, timed out in flight,
    /// appended but not confirmed durable).
    PossiblyPersisted,
    /// Written, though the delivery is reported as failed.
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
    /// The TLS handshake was refused (certificate problems): not retriable.
    Tls,
    /// The per-broker circuit breaker is open: failing fast.
    CircuitOpen,
    /// The delivery timeout passed before the record was acknowledged.
    DeliveryTimeout,
    /// The producer was closed or the record purged before delivery.
    Closed,
    /// The producer id was fenced by a newer instance (fatal for this producer).
    Fenced,
    /// The configuration is invalid (from `build`).
    Config,
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
