//! What a service hands the producer, and what it gets back.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::Header;

/// A record to produce. `Bytes` throughout: nothing is copied until the batch is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic name.
    pub topic: Arc<str>,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
    /// Optional key; the default partitioner hashes it (murmur2, Kafka-compatible).
    pub key: Option<Bytes>,
    /// Value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers (attributes), in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` takes the time of `send`.
    pub timestamp: Option<i64>,
    /// Schema registry subject the value must match (cargo feature `schema`): the value is
    /// validated against the subject's latest schema before it is queued, and the schema
    /// id is attached (a header, or Confluent's wire format: see
    /// [`ProducerBuilder::schema_id_placement`](super::ProducerBuilder)). The value is in
    /// the schema's format: UTF-8 JSON for JSON Schema, an Avro binary datum, Protobuf bytes
    /// of the schema's first message. `None`: the producer's default subject for the topic,
    /// if one is configured, else no validation.
    pub schema_subject: Option<Arc<str>>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
            schema_subject: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header { key: key.into(), value: Some(value.into()) });
        self
    }

    /// Names the schema registry subject the value must match (see
    /// [`ProducerRecord::schema_subject`](ProducerRecord#structfield.schema_subject)).
    pub fn schema_subject(mut self, subject: impl Into<Arc<str>>) -> Self {
        self.schema_subject = Some(subject.into());
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition; `None` with acks=none (the broker does not answer).
    pub offset: Option<i64>,
    /// Record timestamp (ms).
    pub timestamp: i64,
}
