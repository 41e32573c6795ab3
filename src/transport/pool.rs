//! Connection tasks for the producer: connect (QUIC + TLS + `Hello`), open the long-lived
//! data streams, and run one writer and one reader task per stream. Everything they learn
//! goes to the driver as a [`PoolEvent`]; the driver alone decides what it means.
//!
//! A writer task takes every encoded chunk queued for its stream and writes them in one
//! `write_all_chunks` call, so many frames share a stream write (quinn does no Nagle-style
//! coalescing; application batching is what makes small records fast).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::connection::{BrokerConnection, ClientEndpoint, FrameReader, FrameWriter, TransportError};
use crate::protocol::{Frame, Payload};

/// Identifies one connection attempt: broker link, connection slot, generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Index of the broker link.
    pub link: usize,
    /// Connection slot within the link.
    pub slot: usize,
    /// Generation: increases with every (re)connect of the slot.
    pub gen: u64,
}

/// What the connection tasks report to the driver.
#[derive(Debug)]
pub enum PoolEvent {
    /// A connection is ready; `streams[i]` queues chunks for data stream `i`.
    Connected {
        /// Which connection.
        id: ConnId,
        /// The connection (for control requests).
        conn: Arc<BrokerConnection>,
        /// Chunk queues of the data streams.
        streams: Vec<mpsc::UnboundedSender<Bytes>>,
    },
    /// The attempt failed.
    ConnectFailed {
        /// Which connection.
        id: ConnId,
        /// Why.
        error: TransportError,
    },
    /// A response frame arrived on data stream `stream`.
    Frame {
        /// Which connection.
        id: ConnId,
        /// Data stream index.
        stream: usize,
        /// The frame.
        frame: Frame,
    },
    /// A data stream failed or was finished by the broker: the connection is unusable.
    StreamDown {
        /// Which connection.
        id: ConnId,
        /// Data stream index.
        stream: usize,
        /// Why (`None`: finished cleanly by the broker).
        error: Option<TransportError>,
    },
    /// The answer to a control request started with [`spawn_call`].
    Control {
        /// The caller's tag.
        tag: u64,
        /// The response payload or the failure.
        result: Result<Payload, TransportError>,
    },
}

/// Starts connecting `id` to `addr` and opening `streams` data streams.
pub fn spawn_connect(
    endpoint: ClientEndpoint,
    addr: SocketAddr,
    server_name: String,
    client_id: String,
    id: ConnId,
    streams: usize,
    events: mpsc::UnboundedSender<PoolEvent>,
) {
    tokio::spawn(async move {
        let conn = match endpoint.connect(addr, &server_name, &client_id).await {
            Ok(c) => Arc::new(c),
            Err(error) => {
                let _ = events.send(PoolEvent::ConnectFailed { id, error });
                return;
            }
        };
        let mut txs = Vec::with_capacity(streams);
        for stream in 0..streams {
            let s = match conn.open_stream().await {
                Ok(s) => s,
                Err(error) => {
                    conn.close("stream open failed");
                    let _ = events.send(PoolEvent::ConnectFailed { id, error });
                    return;
                }
            };
            let (w, r) = s.split();
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_loop(w, rx, id, stream, events.clone()));
            tokio::spawn(read_loop(r, id, stream, events.clone()));
            txs.push(tx);
        }
        let _ = events.send(PoolEvent::Connected { id, conn, streams: txs });
    });
}

async fn write_loop(
    mut w: FrameWriter,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    id: ConnId,
    stream: usize,
    events: mpsc::UnboundedSender<PoolEvent>,
) {
    let mut chunks = Vec::with_capacity(256);
    while rx.recv_many(&mut chunks, 1024).await > 0 {
        if let Err(error) = w.write_chunks(&mut chunks).await {
            let _ = events.send(PoolEvent::StreamDown { id, stream, error: Some(error) });
            return;
        }
        chunks.clear();
    }
    // The driver dropped the sender: this connection is retired.
    w.finish();
}

async fn read_loop(mut r: FrameReader, id: ConnId, stream: usize, events: mpsc::UnboundedSender<PoolEvent>) {
    loop {
        match r.recv().await {
            Ok(Some(frame)) => {
                if events.send(PoolEvent::Frame { id, stream, frame }).is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = events.send(PoolEvent::StreamDown { id, stream, error: None });
                return;
            }
            Err(error) => {
                let _ = events.send(PoolEvent::StreamDown { id, stream, error: Some(error) });
                return;
            }
        }
    }
}

/// Sends one control request on a fresh stream of `conn` and reports the answer tagged
/// `tag`.
pub fn spawn_call(conn: Arc<BrokerConnection>, payload: Payload, tag: u64, events: mpsc::UnboundedSender<PoolEvent>) {
    tokio::spawn(async move {
        let result = async {
            let mut s = conn.open_stream().await?;
            let r = s.call(payload).await;
            s.finish();
            r
        }
        .await;
        let _ = events.send(PoolEvent::Control { tag, result });
    });
}
