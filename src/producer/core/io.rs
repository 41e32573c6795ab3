//! What goes into the core and what comes out: identifiers of connections and streams,
//! what a broker says about itself, and the core's outputs (produce requests to write,
//! actions for the shell, answers for the handles).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::batches::RecordEntry;
use crate::producer::accumulator::TopicQueues;
use crate::producer::delivery::Delivery;
use crate::producer::error::ProduceError;
use crate::protocol::Payload;

/// Where a topic's queues (or the failure to find them) are sent.
pub(crate) type MetadataReply = oneshot::Sender<Result<Arc<TopicQueues>, ProduceError>>;

/// Where the result of a flush or close is sent.
pub(crate) type FlushReply = oneshot::Sender<Result<(), ProduceError>>;

/// One connection attempt: broker link, connection slot, generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    /// Index of the broker link.
    pub link: usize,
    /// Connection slot within the link.
    pub slot: usize,
    /// Generation: increases with every (re)connect of the slot.
    pub gen: u64,
}

/// One data stream: its connection, its index there, and the generation of the QUIC
/// stream behind it (a reset stream is replaced by a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StreamId {
    /// The connection.
    pub conn: ConnId,
    /// Data stream index within the connection.
    pub index: usize,
    /// Generation of the QUIC stream.
    pub gen: u32,
}

/// What a broker said about itself in `HelloOk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HelloInfo {
    /// Its broker id.
    pub broker_id: u32,
    /// The largest frame it accepts.
    pub max_frame_size: usize,
    /// The largest record batch it accepts in a produce request.
    pub max_batch_bytes: usize,
    /// How many batches per partition it remembers for duplicate detection (the most a
    /// producer may have unacknowledged per partition).
    pub max_in_flight: usize,
    /// It resolves old-epoch batches per partition (see `producer_id`).
    pub per_partition_epochs: bool,
}

/// A produce request to write: the frame head, then the batch.
#[derive(Debug, Clone)]
pub(crate) struct Transmit {
    /// The data stream to write it to.
    pub stream: StreamId,
    /// Frame header and produce fields.
    pub head: Bytes,
    /// The record batch.
    pub batch: Bytes,
}

/// Something the shell must do besides writing produce requests.
#[derive(Debug)]
pub(crate) enum Action {
    /// Resolve `addr`, connect (QUIC + TLS + Hello) and open the data streams; answer with
    /// `handle_connected` or `handle_connect_failed`.
    Connect {
        /// The attempt.
        conn: ConnId,
        /// `host:port`.
        addr: String,
        /// Data streams to open.
        streams: usize,
        /// Read the TLS files again first.
        reload_tls: bool,
    },
    /// Send a control request on a fresh stream of `conn`; answer with `handle_control`.
    Call {
        /// Echoed in `handle_control`.
        tag: u64,
        /// The connection.
        conn: ConnId,
        /// The request.
        request: Payload,
        /// Give up after this long (the core has its own deadline too).
        timeout: Duration,
    },
    /// Reset this data stream and open a replacement with generation `gen + 1`; answer
    /// with `handle_stream_opened` (or a connection loss).
    ResetStream {
        /// The stream.
        stream: StreamId,
    },
    /// Close the connection.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (sent to the broker).
        reason: &'static str,
    },
}

/// An answer for the producer handles.
pub(crate) enum Outcome {
    /// A batch was acknowledged: record `i` is at `base_offset + i`.
    Acked {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: u32,
        /// Offset of the first record (`None` with acks=none).
        base_offset: Option<i64>,
        /// The records, in order.
        records: Vec<RecordEntry>,
    },
    /// These records failed with `error`.
    Failed {
        /// Their deliveries.
        records: Vec<Delivery>,
        /// Why, and whether they may be stored.
        error: ProduceError,
    },
    /// A metadata request from a handle is answered.
    Metadata {
        /// Where to.
        reply: MetadataReply,
        /// The topic's queues, or why there are none.
        result: Result<Arc<TopicQueues>, ProduceError>,
    },
    /// A flush or close is done.
    Flushed {
        /// Where to.
        reply: FlushReply,
        /// `Ok` when every record it covered was acknowledged.
        result: Result<(), ProduceError>,
    },
    /// A purge is done.
    Purged {
        /// Where to.
        reply: oneshot::Sender<usize>,
        /// Records failed.
        count: usize,
    },
    /// A batch was sealed for this partition: the partitioner's hook (user code, so the
    /// shell calls it).
    Sealed {
        /// Topic.
        topic: Arc<str>,
        /// Partition sealed.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// The producer cannot go on (fenced): new records must fail with this at once.
    Fatal(ProduceError),
}

impl Outcome {
    /// Hands a delivery outcome to whoever waits for it (record callbacks and futures,
    /// flush, purge and metadata replies); returns the outcomes the caller must act on
    /// itself (`Sealed`: the partitioner's hook; `Fatal`).
    pub(crate) fn complete(self) -> Option<Outcome> {
        match self {
            Outcome::Acked { topic, partition, base_offset, records } => {
                for (i, r) in records.into_iter().enumerate() {
                    r.delivery.complete(Ok(crate::producer::RecordMetadata {
                        topic: topic.clone(),
                        partition,
                        // The core checked that every offset exists; no overflow here.
                        offset: base_offset.and_then(|b| b.checked_add(i as i64)),
                        timestamp: r.timestamp,
                    }));
                }
            }
            Outcome::Failed { records, error } => {
                for d in records {
                    d.complete(Err(error.clone()));
                }
            }
            Outcome::Metadata { reply, result } => {
                let _ = reply.send(result);
            }
            Outcome::Flushed { reply, result } => {
                let _ = reply.send(result);
            }
            Outcome::Purged { reply, count } => {
                let _ = reply.send(count);
            }
            other @ (Outcome::Sealed { .. } | Outcome::Fatal(_)) => return Some(other),
        }
        None
    }
}
