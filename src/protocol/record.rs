//! The record as the wire carries it: timestamp, optional key, optional value, headers.

use bytes::Bytes;

/// A record header (Kafka calls these headers; danube-cli calls them attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (UTF-8).
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Bytes>,
}

/// One record to be encoded into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key (used by key-hash partitioning and kept with the record).
    pub key: Option<Bytes>,
    /// Optional value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}
