//! The response writer: one task per stream writes responses in request order, waiting
//! for the partition's group commit where a response needs it.
//!
//! acks=all responses wait here, not in the reader, so the reader keeps appending while an
//! fsync runs. A client that stops reading responses fills the bounded channel in front
//! of this task, which stops the reader, which stops QUIC flow control: memory stays
//! bounded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::budget::Charge;
use super::metrics::{inc, BrokerMetrics};
use super::partition::Partition;
use super::telemetry::{seconds_since, GaugeGuard};
use crate::protocol::frame::{encode_fetch_ok_head, ProduceResult};
use crate::protocol::{ErrorCode, Frame, Payload};

/// Responses queued per stream before the reader stops reading.
pub(crate) const RESPONSE_QUEUE: usize = 1024;
/// Coalesce at most this many response bytes into one stream write.
const WRITE_COALESCE: usize = 64 * 1024;
/// Fetched batches larger than this are written as they are, not copied into the
/// coalescing buffer.
const COPY_LIMIT: usize = 16 * 1024;

/// A response in the stream's queue, with the in-flight count of the request it answers
/// (`None` for an answer to a frame that was not a request), released once written or
/// dropped.
pub(crate) struct Queued(pub(crate) Pending, pub(crate) Option<GaugeGuard>);

/// A response waiting its turn on the stream.
pub(crate) enum Pending {
    /// Ready to write.
    Ready(Frame),
    /// Ready to write, and charged to the connection's response budget until written.
    Charged(Frame, Charge),
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
    /// A response computed later, in order: a cluster acks=all produce waiting for its
    /// replicas, a follower's fetch waiting for new data (long poll).
    Later(Pin<Box<dyn Future<Output = Frame> + Send>>),
}

/// Writes the responses received on `rx` to `send`, in order, until the channel closes
/// (then finishes the stream) or the client stops reading the stream.
/// When the client takes none of the stream's bytes for `stall` (`None`: never give up),
/// the stream is reset with [`STOP_STALLED`] and its queued responses are dropped,
/// releasing their budget.
pub(crate) async fn write_responses(
    send: quinn::SendStream,
    mut rx: mpsc::Receiver<Queued>,
    stall: Option<Duration>,
    metrics: Arc<BrokerMetrics>,
) {
    let mut w = Writer { send, out: BytesMut::with_capacity(16 * 1024), charges: Vec::new(), stall, metrics };
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(Queued(p, _in_flight)) = next.take() {
            let written = match p {
                Pending::Ready(f) => w.add(f).await,
                Pending::Charged(f, charge) => {
                    w.charges.push(charge);
                    w.add(f).await
                }
                Pending::Durable { partition, end, generation, timeout, correlation_id, result } => {
                    // Do not hold finished responses back behind an fsync; and when the
                    // client is gone, stop here rather than wait for the fsync while
                    // holding the charges of what was buffered.
                    if partition.durable_end() < end && !w.flush().await {
                        return;
                    }
                    let started = std::time::Instant::now();
                    let result = wait_durable(&partition, end, generation, timeout, result).await;
                    w.metrics.detail.group_commit_wait.observe(seconds_since(started));
                    w.metrics.detail.produced(crate::protocol::Acks::All, result.error);
                    if result.error != ErrorCode::None {
                        tracing::debug!(correlation_id, topic = %partition.topic(), partition = partition.index(),
                            error = %result.error, message = %result.message, "acks=all produce not made durable");
                    }
                    w.add(Frame { correlation_id, payload: Payload::ProduceResult(result) }).await
                }
                Pending::Later(answer) => {
                    // Do not hold finished responses back behind the wait.
                    let flushed = w.flush().await;
                    flushed && w.add(answer.await).await
                }
            };
            if !written {
                return;
            }
            if w.out.len() >= WRITE_COALESCE {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !w.flush().await {
            return;
        }
    }
    let _ = w.send.finish();
}

/// Application error code with which the broker resets a stream whose client has not
/// taken any response bytes for the configured stall timeout.
pub(crate) const STOP_STALLED: u32 = 2;

/// A stream's send half with its coalescing buffer and the charges of what it holds.
struct Writer {
    send: quinn::SendStream,
    out: BytesMut,
    /// Charges of the responses in `out` (and of the one being written).
    charges: Vec<Charge>,
    stall: Option<Duration>,
    metrics: Arc<BrokerMetrics>,
}

impl Writer {
    /// Encodes `f` into the buffer; a large fetch response is written at once, without
    /// copying its batches. False when the client stopped reading the stream.
    async fn add(&mut self, f: Frame) -> bool {
        match f.payload {
            Payload::FetchOk(ok) if ok.batches.len() > COPY_LIMIT => {
                let batches: Bytes = ok.batches;
                encode_fetch_ok_head(
                    &mut self.out,
                    f.correlation_id,
                    ok.high_watermark,
                    ok.log_start_offset,
                    batches.len(),
                );
                // Copies of the small bytes (see `flush`); the batches as they are.
                let head = Bytes::copy_from_slice(&self.out);
                self.out.clear();
                let ok = self.write(&mut [head, batches]).await;
                self.charges.clear();
                ok
            }
            _ => {
                f.encode(&mut self.out);
                true
            }
        }
    }

    /// Writes the buffer; releases the charges of what it held. False when the client
    /// stopped reading the stream.
    async fn flush(&mut self) -> bool {
        if !self.out.is_empty() {
            // A copy of exactly the bytes to send: quinn keeps what it is given until the
            // peer acknowledges it, and a slice of `out` would keep all of `out` alive.
            let out = Bytes::copy_from_slice(&self.out);
            self.out.clear();
            if !self.write(&mut [out]).await {
                return false;
            }
        }
        self.charges.clear();
        true
    }

    /// Writes every chunk. False when the client stopped reading the stream, or took
    /// nothing for the stall timeout (the stream is then reset).
    async fn write(&mut self, mut chunks: &mut [Bytes]) -> bool {
        while !chunks.is_empty() {
            let written = match self.stall {
                None => self.send.write_chunks(chunks).await,
                // `write_chunks` is cancel-safe: on timeout nothing was written.
                Some(stall) => match tokio::time::timeout(stall, self.send.write_chunks(chunks)).await {
                    Ok(w) => w,
                    Err(_) => {
                        inc(&self.metrics.streams_stalled);
                        tracing::info!(
                            ?stall,
                            "client took no response bytes for the stall timeout; resetting the stream"
                        );
                        let _ = self.send.reset(STOP_STALLED.into());
                        return false;
                    }
                },
            };
            match written {
                Ok(w) => chunks = &mut chunks[w.chunks..],
                Err(_) => return false,
            }
        }
        true
    }
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
