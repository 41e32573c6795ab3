//! Stream framing: turns one QUIC receive stream into [`Frame`]s.
//!
//! Bytes are read in chunks into a buffer and cut into frames with [`Frame::decode`]; a
//! request split across reads, or many requests in one read, are both fine. A large frame
//! (over [`UNRESERVED_FRAME`]) reserves its whole size from the connection's budget for
//! large frames before its body is read, and the reservation goes out with the decoded
//! frame ([`ReadEvent::Frame`]): the caller keeps it until the request is done with the
//! frame's bytes (a produce waits for its partition's owner holding its batch). When the
//! budget is used up the frame is refused and its body is thrown away as it arrives.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::BrokerMetrics;
use super::telemetry::GaugeGuard;
use crate::protocol::frame::{FrameError, FrameHead};
use crate::protocol::Frame;

/// Frames up to this size are read without a reservation from the connection's budget.
pub(crate) const UNRESERVED_FRAME: usize = 64 * 1024;
/// Application error code used when the broker stops reading a stream whose framing
/// is lost.
pub(crate) const STOP_BAD_FRAMING: u32 = 1;

/// Bytes of a large frame reserved from the connection's budget (and counted in the
/// `request_bytes_held` gauge) until dropped.
pub(crate) struct FramePermit {
    permit: OwnedSemaphorePermit,
    metrics: Arc<BrokerMetrics>,
    /// Its share of the broker-wide `frame_bytes_reserved` gauge.
    _reserved: GaugeGuard,
}

impl FramePermit {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<BrokerMetrics>) -> FramePermit {
        let n = permit.num_permits() as u64;
        let now = metrics.request_bytes_held.fetch_add(n, Relaxed) + n;
        metrics.request_bytes_held_peak.fetch_max(now, Relaxed);
        let _reserved = GaugeGuard::new(&metrics, |m| &m.frame_bytes_reserved, n);
        FramePermit { permit, metrics, _reserved }
    }
}

impl Drop for FramePermit {
    fn drop(&mut self) {
        self.metrics.request_bytes_held.fetch_sub(self.permit.num_permits() as u64, Relaxed);
    }
}

/// What the next read from a stream produced.
pub(crate) enum ReadEvent {
    /// A whole, decoded frame, with the connection's budget it holds when it is large:
    /// drop that once the request no longer holds the frame's bytes.
    Frame(Frame, Option<FramePermit>),
    /// A frame that could not be decoded. When it is not resumable, framing is lost and
    /// the stream has been stopped.
    Bad(FrameError),
    /// A large frame refused because the connection's budget for unfinished frames is used
    /// up; its body is being discarded.
    Refused {
        /// The refused frame's correlation id.
        correlation_id: u32,
        /// Its total size.
        frame_bytes: usize,
        /// The connection's budget.
        budget: u64,
    },
    /// The client finished the stream inside a frame.
    Truncated {
        /// Bytes of the unfinished frame that were received.
        pending: usize,
    },
    /// The stream ended: finished cleanly, reset by the client, or the connection is gone.
    End,
}

/// Most bytes taken from QUIC per read (see [`FrameReader::next`]).
const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from one receive stream.
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    max_frame: usize,
    budget: Arc<Semaphore>,
    budget_bytes: u64,
    metrics: Arc<BrokerMetrics>,
    /// The connection's budget held for the large frame being received, if any.
    reserved: Option<FramePermit>,
    /// Bytes of a refused frame still to be read and thrown away.
    skip: usize,
    ended: bool,
}

impl FrameReader {
    /// A reader for `recv` accepting frames up to `max_frame` bytes, reserving large
    /// frames from `budget` (a semaphore of `budget_bytes` permits, one per byte) and
    /// counting what it reserves in `metrics`.
    pub(crate) fn new(
        recv: quinn::RecvStream,
        max_frame: usize,
        budget: Arc<Semaphore>,
        budget_bytes: u64,
        metrics: Arc<BrokerMetrics>,
    ) -> Self {
        FrameReader {
            recv,
            buf: BytesMut::with_capacity(64 * 1024),
            max_frame,
            budget,
            budget_bytes: budget_bytes.clamp(1, u64::from(u32::MAX)),
            metrics,
            reserved: None,
            skip: 0,
            ended: false,
        }
    }

    /// Tells the client to stop sending on this stream.
    pub(crate) fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(code.into());
    }

    /// The next frame or event. Cancel-safe: the only await is QUIC's `read_chunk`.
    ///
    /// Reads at most [`READ_CHUNK`] bytes at a time: QUIC grants the client new credit for
    /// what is read, so reading whatever QUIC holds (it may merge a window's worth of
    /// received data into one chunk) would let a client that sends faster than its frames
    /// are served park up to a second receive window in this buffer.
    pub(crate) async fn next(&mut self) -> ReadEvent {
        if self.ended {
            return ReadEvent::End;
        }
        loop {
            match Frame::decode(&mut self.buf, self.max_frame) {
                Ok(Some(f)) => return ReadEvent::Frame(f, self.reserved.take()),
                Ok(None) => {}
                Err(e) => {
                    self.reserved = None;
                    if !e.resumable {
                        self.stop(STOP_BAD_FRAMING);
                        self.ended = true;
                    }
                    return ReadEvent::Bad(e);
                }
            }
            if let Some(refused) = self.reserve() {
                return refused;
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(c)) => {
                    let thrown = self.skip.min(c.bytes.len());
                    self.skip -= thrown;
                    self.buf.extend_from_slice(&c.bytes[thrown..]);
                }
                Ok(None) => {
                    self.ended = true;
                    if !self.buf.is_empty() || self.skip > 0 {
                        return ReadEvent::Truncated { pending: self.buf.len() };
                    }
                    return ReadEvent::End;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "stream read ended");
                    self.ended = true;
                    return ReadEvent::End;
                }
            }
        }
    }

    /// When a large frame has begun, takes its whole size from the connection's budget
    /// before its body is read, so the large frames one connection holds (being received,
    /// or decoded and waiting for their request to finish) stay bounded.
    /// When the budget is used up the frame is refused (the caller answers
    /// `RESOURCE_LIMIT`, retriable) and its body is read and thrown away: waiting instead
    /// would leave its bytes unread in QUIC's connection-wide receive window, which could
    /// starve the very frames that hold the budget.
    fn reserve(&mut self) -> Option<ReadEvent> {
        if self.reserved.is_some() || self.skip > 0 {
            return None;
        }
        let head = FrameHead::peek(&self.buf).ok()??;
        let need = head.total_len();
        if need <= UNRESERVED_FRAME || need <= self.buf.len() || head.length > self.max_frame {
            return None;
        }
        let permits = (need as u64).min(self.budget_bytes) as u32;
        match self.budget.clone().try_acquire_many_owned(permits) {
            Ok(p) => {
                self.reserved = Some(FramePermit::new(p, self.metrics.clone()));
                None
            }
            Err(_) => {
                self.skip = need - self.buf.len();
                self.buf.clear();
                Some(ReadEvent::Refused {
                    correlation_id: head.correlation_id,
                    frame_bytes: need,
                    budget: self.budget_bytes,
                })
            }
        }
    }
}
