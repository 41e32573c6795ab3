//! The response writer: one task per stream writes responses in request order, waiting
//! for the partition's group commit where a response needs it.
//!
//! acks=all responses wait here, not in the reader, so the reader keeps appending while an
//! fsync runs. A client that stops reading responses fills the bounded channel in front
//! of this task, which stops the reader, which stops QUIC flow control: memory stays
//! bounded.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::partition::Partition;
use crate::protocol::frame::ProduceResult;
use crate::protocol::{ErrorCode, Frame, Payload};

/// Responses queued per stream before the reader stops reading.
pub(crate) const RESPONSE_QUEUE: usize = 1024;
/// Coalesce at most this many response bytes into one stream write.
const WRITE_COALESCE: usize = 64 * 1024;

/// A response waiting its turn on the stream.
pub(crate) enum Pending {
    /// Ready to write.
    Ready(Frame),
    /// A produce answered once the partition is durable up to `end` in `generation`
    /// (from [`Appended`](super::partition::Appended)).
    Durable {
        partition: Arc<Partition>,
        end: i64,
        generation: u64,
        timeout: Duration,
        correlation_id: u32,
        result: ProduceResult,
    },
}

/// Writes the responses received on `rx` to `send`, in order, until the channel closes
/// (then finishes the stream) or the client stops reading the stream.
pub(crate) async fn write_responses(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Pending>) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(p) = next.take() {
            match p {
                Pending::Ready(f) => f.encode(&mut out),
                Pending::Durable { partition, end, generation, timeout, correlation_id, result } => {
                    if partition.durable_end() < end && !out.is_empty() {
                        // Do not hold finished responses back behind an fsync.
                        if send.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                    let result = wait_durable(&partition, end, generation, timeout, result).await;
                    Frame { correlation_id, payload: Payload::ProduceResult(result) }.encode(&mut out);
                }
            }
            if out.len() >= WRITE_COALESCE {
                break;
            }
            next = rx.try_recv().ok();
        }
        if send.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
    let _ = send.finish();
}

/// The group-commit wait of an acks=all produce: `result` when the partition became
/// durable up to `end` in time (in the batch's generation), otherwise an error that keeps
/// the base offset, so the client knows the batch may be stored.
async fn wait_durable(
    partition: &Partition,
    end: i64,
    generation: u64,
    timeout: Duration,
    result: ProduceResult,
) -> ProduceResult {
    match tokio::time::timeout(timeout, partition.wait_durable(end, generation)).await {
        Ok(Ok(())) => result,
        Ok(Err(msg)) => ProduceResult {
            error: ErrorCode::StorageError,
            duplicate: false,
            log_append_time: -1,
            message: msg,
            ..result
        },
        Err(_) => ProduceResult {
            error: ErrorCode::RequestTimedOut,
            duplicate: false,
            log_append_time: -1,
            message: format!("batch appended but not fsync'd within {timeout:?}"),
            ..result
        },
    }
}
