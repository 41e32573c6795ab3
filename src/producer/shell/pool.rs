//! Connection tasks for the shell: connect (resolve, QUIC + TLS + `Hello`), open the
//! long-lived data streams, and run one writer and one reader task per stream; control
//! requests on fresh streams. Everything they learn goes back to the shell as an
//! [`Event`]; the core alone decides what it means.
//!
//! A writer task takes every request queued for its stream and hands them to quinn
//! together, so many frames share a stream write (quinn does no Nagle-style coalescing;
//! application batching is what makes small records fast). After each partial write it
//! reports how many more requests were written whole: the core starts a request's timer
//! at its write, so a write blocked by flow control holds back only the requests it has
//! not taken yet (and those time out from their hand-off, see `core::timeouts`).

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

/// Events waiting for the shell, at most. The tasks wait when it is full: a broker that
/// sends frames faster than the shell handles them is read no faster (QUIC flow control
/// then holds it back) instead of filling memory.
pub(crate) const EVENT_CAPACITY: usize = 4096;

/// Where the connection tasks report.
pub(crate) type Events = mpsc::Sender<Event>;

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
    /// Requests to write: (frame head, batch). Unbounded, but bounded by construction: the
    /// core hands out a request only for a batch its window lets go, so a stream never has
    /// more waiting than `max_in_flight` per partition it carries.
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
fn start_stream(s: FrameStream, stream: StreamId, events: &Events) -> StreamHandle {
    let (w, r) = s.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let (reset_w, reset_w_rx) = oneshot::channel();
    let (reset_r, reset_r_rx) = oneshot::channel();
    tokio::spawn(write_loop(w, rx, stream, events.clone(), reset_w_rx));
    tokio::spawn(read_loop(r, stream, events.clone(), reset_r_rx));
    StreamHandle { tx, reset: Some((reset_w, reset_r)) }
}

/// Resolves `name` (`host:port`) now (a broker may move between connection attempts) to an
/// address the endpoint's socket can reach: IPv4 for an IPv4 socket; IPv6 first for an
/// IPv6 one (which reaches IPv4 addresses too, mapped).
async fn resolve(name: &str, local: SocketAddr) -> Result<SocketAddr, TransportError> {
    let bad = |reason: String| TransportError::Resolve { name: name.to_owned(), reason };
    let addrs = tokio::net::lookup_host(name).await.map_err(|e| bad(e.to_string()))?;
    pick_address(addrs, local).ok_or_else(|| {
        let family = if local.is_ipv4() { "IPv4" } else { "IP" };
        bad(format!("no {family} address (the producer's socket is bound to {local})"))
    })
}

/// The first of `addrs` a socket bound to `local` can send to (see [`resolve`]).
fn pick_address(addrs: impl IntoIterator<Item = SocketAddr>, local: SocketAddr) -> Option<SocketAddr> {
    let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
    if local.is_ipv4() {
        addrs.into_iter().find(SocketAddr::is_ipv4)
    } else {
        addrs.iter().copied().find(SocketAddr::is_ipv6).or_else(|| addrs.first().copied())
    }
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
    /// The whole attempt (resolve, TLS files, handshake, Hello, data streams) must be
    /// done within this.
    pub connect_timeout: Duration,
}

/// Connects and opens the data streams; reports `Connected` or `ConnectFailed`. The whole
/// attempt is bounded by the connect timeout: a DNS lookup that hangs, or a broker that
/// allows fewer streams than `streams_per_connection` (opening one more waits forever),
/// is a failed attempt.
pub(crate) fn spawn_connect(spec: ConnectSpec, events: Events) {
    tokio::spawn(async move {
        let conn = spec.conn;
        let mut reached: Option<SocketAddr> = None;
        let attempt = async {
            let local = spec.endpoint.quinn().local_addr().map_err(|e| TransportError::Resolve {
                name: spec.addr.clone(),
                reason: format!("the producer's socket has no local address: {e}"),
            })?;
            let addr = resolve(&spec.addr, local).await?;
            reached = Some(addr);
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
            // Every stream is open before any task starts: an attempt given up half-way
            // leaves nothing behind (dropping the last handle closes the connection).
            let mut opened = Vec::with_capacity(spec.streams);
            for _ in 0..spec.streams {
                opened.push(c.open_stream().await?);
            }
            Ok((c, opened))
        };
        let result = match tokio::time::timeout(spec.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(match reached {
                Some(addr) => TransportError::Unreachable { addr, timeout: spec.connect_timeout },
                None => TransportError::Resolve {
                    name: spec.addr.clone(),
                    reason: format!("no address within the connect timeout ({:?})", spec.connect_timeout),
                },
            }),
        };
        let event = match result {
            Ok((c, opened)) => {
                let streams = opened
                    .into_iter()
                    .enumerate()
                    .map(|(index, s)| start_stream(s, StreamId { conn, index, gen: 0 }, &events))
                    .collect();
                Event::Connected { conn, connection: Arc::new(c), streams }
            }
            Err(error) => Event::ConnectFailed { conn, error },
        };
        let _ = events.send(event).await;
    });
}

/// Opens the replacement of a reset data stream.
pub(crate) fn spawn_reopen(connection: Arc<BrokerConnection>, stream: StreamId, events: Events) {
    tokio::spawn(async move {
        match connection.open_stream().await {
            Ok(s) => {
                let handle = start_stream(s, stream, &events);
                let _ = events.send(Event::StreamOpened { stream, handle }).await;
            }
            Err(error) => {
                let _ = events.send(Event::StreamDown { stream, error: Some(error) }).await;
            }
        }
    });
}

async fn write_loop(
    mut w: FrameWriter,
    mut rx: mpsc::UnboundedReceiver<(Bytes, Bytes)>,
    stream: StreamId,
    events: Events,
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
        // Each request is two chunks (head, batch); report the requests written whole
        // after every partial write.
        let (mut done, mut reported) = (0, 0);
        while done < chunks.len() {
            let written = tokio::select! {
                biased;
                r = &mut reset => {
                    if r.is_ok() {
                        w.reset(RESET_TIMED_OUT);
                    }
                    return;
                }
                r = w.write_some_chunks(&mut chunks[done..]) => r,
            };
            match written {
                Ok(k) => done += k,
                Err(error) => {
                    let _ = events.send(Event::StreamDown { stream, error: Some(error) }).await;
                    return;
                }
            }
            let frames = done / 2;
            if frames > reported {
                let sent = tokio::select! {
                    biased;
                    r = &mut reset => {
                        if r.is_ok() {
                            w.reset(RESET_TIMED_OUT);
                        }
                        return;
                    }
                    r = events.send(Event::Written { stream, frames: frames - reported }) => r,
                };
                if sent.is_err() {
                    return;
                }
                reported = frames;
            }
        }
        debug_assert_eq!(reported, n);
        chunks.clear();
    }
}

async fn read_loop(mut r: FrameReader, stream: StreamId, events: Events, mut reset: oneshot::Receiver<()>) {
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
        // Waits while the shell is behind (see `EVENT_CAPACITY`), unless reset meanwhile.
        let sent = tokio::select! {
            biased;
            _ = &mut reset => {
                r.stop(RESET_TIMED_OUT);
                return;
            }
            sent = events.send(ev) => sent,
        };
        if sent.is_err() || last {
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
    events: Events,
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
        let _ = events.send(Event::Control { tag, result }).await;
    });
}

#[cfg(test)]
mod tests {
    use super::pick_address;

    #[test]
    fn the_address_matches_the_socket_family() {
        let v4 = "10.0.0.1:9092".parse().unwrap();
        let v6 = "[2001:db8::1]:9092".parse().unwrap();
        let any4 = "0.0.0.0:0".parse().unwrap();
        let any6 = "[::]:0".parse().unwrap();
        assert_eq!(pick_address([v6, v4], any4), Some(v4), "an IPv4 socket cannot send to IPv6");
        assert_eq!(pick_address([v6], any4), None);
        assert_eq!(pick_address([v4, v6], any6), Some(v6));
        assert_eq!(pick_address([v4], any6), Some(v4), "an IPv6 socket reaches IPv4, mapped");
        assert_eq!(pick_address([], any6), None);
    }
}
