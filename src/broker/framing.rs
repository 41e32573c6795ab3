//! Stream framing: turns one QUIC receive stream into [`Frame`]s.
//!
//! Bytes are read in chunks into a buffer and cut into frames with [`Frame::decode`]; a
//! request split across reads, or many requests in one read, are both fine. A large frame
//! (over [`UNRESERVED_FRAME`]) reserves its whole size from the connection's budget for
//! unfinished frames before its body is read; when the budget is used up the frame is
//! refused and its body is thrown away as it arrives.

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

/// What the next read from a stream produced.
pub(crate) enum ReadEvent {
    /// A whole, decoded frame.
    Frame(Frame),
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
    /// The connection's budget held for the large frame being received, if any, and its
    /// share of the broker-wide `frame_bytes_reserved` gauge.
    reserved: Option<(OwnedSemaphorePermit, GaugeGuard)>,
    metrics: Arc<BrokerMetrics>,
    /// Bytes of a refused frame still to be read and thrown away.
    skip: usize,
    ended: bool,
}

impl FrameReader {
    /// A reader for `recv` accepting frames up to `max_frame` bytes, reserving large
    /// frames from `budget` (a semaphore of `budget_bytes` permits, one per byte).
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
            reserved: None,
            metrics,
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
                Ok(Some(f)) => {
                    self.reserved = None;
                    return ReadEvent::Frame(f);
                }
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
    /// before its body is read, so the unfinished frames of one connection stay bounded.
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
                let gauge = GaugeGuard::new(&self.metrics, |m| &m.frame_bytes_reserved, u64::from(permits));
                self.reserved = Some((p, gauge));
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
