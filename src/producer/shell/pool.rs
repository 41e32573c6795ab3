//! Connection tasks for the shell: connect (resolve, QUIC + TLS + `Hello`), open the
//! long-lived data streams, and run one writer and one reader task per stream; control
//! requests on fresh streams. Everything they learn goes back to the shell as an
//! [`Event`]; the core alone decides what it means.
//!
//! A writer task takes every request queued for its stream and writes them in one
//! `write_all_chunks` call, so many frames share a stream write (quinn does no
//! Nagle-style coalescing; application batching is what makes small records fast), then
//! reports how many it wrote: the core starts a request's timer at its write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::auth::client::SaslCredentials;
use crate::producer::config::TlsConfig;
use crate::producer::core::{ConnId, StreamId};
use crate::protocol::{Frame, Payload};
use crate::transport::tls::QuicTuning;
use crate::transport::{BrokerConnection, ClientEndpoint, FrameReader, FrameStream, FrameWriter, TransportError};

/// Application error code of a stream the producer resets (a request timed out on it).
pub(crate) const RESET_TIMED_OUT: u32 = 1;

/// What the connection tasks report.
pub(crate) enum Event {
    /// A connection is ready with its data streams.
    Connected { conn: ConnId, connection: Arc<BrokerConnection>, streams: Vec<StreamHandle> },
    /// The attempt failed.
    ConnectFailed { conn: ConnId, error: TransportError },
    /// A replacement data stream is open.
    StreamOpened { stream: StreamId, handle: StreamHandle },
    /// A data stream failed, or the broker finished it (`None`).
    StreamDown { stream: StreamId, error: Option<TransportError> },
    /// The writer wrote the next `frames` requests of the stream.
    Written { stream: StreamId, frames: usize },
    /// A response frame arrived on a data stream.
    Frame { stream: StreamId, frame: Frame },
    /// The answer to a control request.
    Control { tag: u64, result: Result<Payload, TransportError> },
}

/// The shell's end of one data stream.
pub(crate) struct StreamHandle {
    /// Requests to write: (frame head, batch).
    pub tx: mpsc::UnboundedSender<(Bytes, Bytes)>,
    /// Resets the stream (both halves).
    reset: Option<(oneshot::Sender<()>, oneshot::Sender<()>)>,
}

impl StreamHandle {
    /// Resets the stream: the writer abandons what it has not written, the reader stops.
    pub(crate) fn reset(&mut self) {
        if let Some((w, r)) = self.reset.take() {
            let _ = w.send(());
            let _ = r.send(());
        }
    }
}

/// Starts the tasks of one data stream.
fn start_stream(s: FrameStream, stream: StreamId, events: &mpsc::UnboundedSender<Event>) -> StreamHandle {
    let (w, r) = s.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (reset_w, reset_w_rx) = oneshot::channel();
    let (reset_r, reset_r_rx) = oneshot::channel();
    tokio::spawn(write_loop(w, rx, stream, events.clone(), reset_w_rx));
    tokio::spawn(read_loop(r, stream, events.clone(), reset_r_rx));
    StreamHandle { tx, reset: Some((reset_w, reset_r)) }
}

/// Resolves `name` (`host:port`) now: a broker may move between connection attempts.
async fn resolve(name: &str) -> Result<SocketAddr, TransportError> {
    let bad = |reason: String| TransportError::Resolve { name: name.to_owned(), reason };
    tokio::net::lookup_host(name).await.map_err(|e| bad(e.to_string()))?.next().ok_or_else(|| bad("no address".into()))
}

/// The client configuration read again from the certificate files, once that happened
/// (used by every later attempt instead of the endpoint's).
pub(crate) type Reloaded = Arc<std::sync::Mutex<Option<quinn::ClientConfig>>>;

/// TLS for a connection attempt.
pub(crate) struct Tls {
    /// The material as loaded (its files are read again when `reload`).
    pub material: TlsConfig,
    pub tuning: QuicTuning,
    /// Read the certificate files again first (a broker refused the certificate).
    pub reload: bool,
    pub current: Reloaded,
}

impl Tls {
    /// The client configuration to connect with: read again from the files (off the
    /// runtime) when asked, else the last one read, else the endpoint's (`None`).
    async fn config(self) -> Option<quinn::ClientConfig> {
        if self.reload {
            let (material, tuning) = (self.material, self.tuning);
            let read = tokio::task::spawn_blocking(move || {
                let t = material.reload().map_err(|e| e.to_string())?;
                super::quic_config(&t, &tuning)
            })
            .await;
            match read {
                Ok(Ok(cfg)) => {
                    *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg.clone());
                    return Some(cfg);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the TLS files again; keeping the previous ones"),
                Err(e) => tracing::warn!(error = %e, "reading the TLS files failed"),
            }
        }
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What a connection attempt needs.
pub(crate) struct ConnectSpec {
    pub endpoint: ClientEndpoint,
    pub tls: Tls,
    pub addr: String,
    pub server_name: String,
    pub client_id: String,
    /// SASL credentials when the producer has no client certificate.
    pub sasl: Option<SaslCredentials>,
    pub conn: ConnId,
    pub streams: usize,
}

/// Connects and opens the data streams; reports `Connected` or `ConnectFailed`.
pub(crate) fn spawn_connect(spec: ConnectSpec, events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        let conn = spec.conn;
        let result = async {
            let addr = resolve(&spec.addr).await?;
            let c = match spec.tls.config().await {
                Some(cfg) => spec.endpoint.connect_with(cfg, addr, &spec.server_name, &spec.client_id).await?,
                None => spec.endpoint.connect(addr, &spec.server_name, &spec.client_id).await?,
            };
            let mut c = c;
            // Without a certificate: SASL before anything else (and re-authentication,
            // on its own stream, for as long as the connection lives).
            if let Err(e) = c.authenticate(spec.sasl.as_ref()).await {
                c.close("authentication failed");
                return Err(e);
            }
            let c = Arc::new(c);
            let mut handles = Vec::with_capacity(spec.streams);
            for index in 0..spec.streams {
                let s = match c.open_stream().await {
                    Ok(s) => s,
                    Err(e) => {
                        c.close("stream open failed");
                        return Err(e);
                    }
                };
                handles.push(start_stream(s, StreamId { conn, index, gen: 0 }, &events));
            }
            Ok((c, handles))
        }
        .await;
        let _ = events.send(match result {
            Ok((connection, streams)) => Event::Connected { conn, connection, streams },
            Err(error) => Event::ConnectFailed { conn, error },
        });
    });
}

/// Opens the replacement of a reset data stream.
pub(crate) fn spawn_reopen(connection: Arc<BrokerConnection>, stream: StreamId, events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        match connection.open_stream().await {
            Ok(s) => {
                let handle = start_stream(s, stream, &events);
                let _ = events.send(Event::StreamOpened { stream, handle });
            }
            Err(error) => {
                let _ = events.send(Event::StreamDown { stream, error: Some(error) });
            }
        }
    });
}

async fn write_loop(
    mut w: FrameWriter,
    mut rx: mpsc::UnboundedReceiver<(Bytes, Bytes)>,
    stream: StreamId,
    events: mpsc::UnboundedSender<Event>,
    mut reset: oneshot::Receiver<()>,
) {
    let mut requests = Vec::with_capacity(256);
    let mut chunks = Vec::with_capacity(512);
    loop {
        let n = tokio::select! {
            biased;
            r = &mut reset => {
                if r.is_ok() {
                    w.reset(RESET_TIMED_OUT);
                }
                return;
            }
            n = rx.recv_many(&mut requests, 1024) => n,
        };
        if n == 0 {
            // The shell dropped the sender: this connection is retired.
            w.finish();
            return;
        }
        for (head, batch) in requests.drain(..) {
            chunks.push(head);
            chunks.push(batch);
        }
        let written = tokio::select! {
            biased;
            r = &mut reset => {
                if r.is_ok() {
                    w.reset(RESET_TIMED_OUT);
                }
                return;
            }
            r = w.write_chunks(&mut chunks) => r,
        };
        chunks.clear();
        if let Err(error) = written {
            let _ = events.send(Event::StreamDown { stream, error: Some(error) });
            return;
        }
        if events.send(Event::Written { stream, frames: n }).is_err() {
            return;
        }
    }
}

async fn read_loop(
    mut r: FrameReader,
    stream: StreamId,
    events: mpsc::UnboundedSender<Event>,
    mut reset: oneshot::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut reset => {
                r.stop(RESET_TIMED_OUT);
                return;
            }
            f = r.recv() => f,
        };
        let ev = match next {
            Ok(Some(frame)) => Event::Frame { stream, frame },
            Ok(None) => Event::StreamDown { stream, error: None },
            Err(error) => Event::StreamDown { stream, error: Some(error) },
        };
        let last = !matches!(ev, Event::Frame { .. });
        if events.send(ev).is_err() || last {
            return;
        }
    }
}

/// Sends one control request on a fresh stream of `connection` and reports the answer
/// (or a timeout after `timeout`) tagged `tag`.
pub(crate) fn spawn_call(
    connection: Arc<BrokerConnection>,
    payload: Payload,
    tag: u64,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        let addr = connection.addr();
        let call = async {
            let mut s = connection.open_stream().await?;
            let r = s.call(payload).await;
            s.finish();
            r
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout { addr, timeout }),
        };
        let _ = events.send(Event::Control { tag, result });
    });
}
