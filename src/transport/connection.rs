//! Client side of a broker connection: the QUIC endpoint, the `Hello` exchange that
//! makes a connection "ready", and framed request streams.
//!
//! quinn's `connect()` completes before the broker has verified the client certificate,
//! so a connection is only handed out after `Hello` → `HelloOk`; a refused certificate
//! shows up there as a TLS alert and becomes [`TransportError::TlsRejected`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use super::sasl::Reauthenticator;
use super::tls::tls_alert_name;
use crate::auth::client::{SaslCredentials, SaslError, Session};
use crate::protocol::frame::{Hello, HelloOk};
use crate::protocol::{ErrorCode, Frame, FrameError, FrameKind, Payload, MAX_FRAME_SIZE, PROTOCOL_VERSION};

/// Which end of a TLS handshake refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuser {
    /// The broker refused the client (certificate missing, unknown CA, expired, ALPN).
    Broker,
    /// This client refused the broker's certificate.
    Client,
}

/// Errors talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The endpoint could not be created or the connection attempt not started.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Broker address.
        addr: SocketAddr,
        /// quinn's reason.
        reason: String,
    },
    /// Nothing answered the QUIC handshake in time.
    #[error("no broker answered at {addr} within {timeout:?} (is a broker listening there?)")]
    Unreachable {
        /// Broker address.
        addr: SocketAddr,
        /// The connect timeout in force.
        timeout: Duration,
    },
    /// The TLS handshake was refused by one side.
    #[error("TLS handshake with {addr} refused by the {}: {detail}", match .by { Refuser::Broker => "broker", Refuser::Client => "client" })]
    TlsRejected {
        /// Broker address.
        addr: SocketAddr,
        /// Who refused.
        by: Refuser,
        /// TLS alert code, when one was sent.
        alert: Option<u8>,
        /// What was wrong, in words.
        detail: String,
    },
    /// The connection was lost or closed.
    #[error("connection to {addr} lost: {source}")]
    ConnectionLost {
        /// Broker address.
        addr: SocketAddr,
        /// quinn's error.
        #[source]
        source: quinn::ConnectionError,
    },
    /// A stream was reset or stopped by the broker.
    #[error("stream to {addr} closed by the broker: {detail}")]
    StreamClosed {
        /// Broker address.
        addr: SocketAddr,
        /// What happened.
        detail: String,
    },
    /// The broker sent bytes that are not a valid frame.
    #[error("invalid frame from {addr}: {source}")]
    BadFrame {
        /// Broker address.
        addr: SocketAddr,
        /// The decode failure.
        #[source]
        source: FrameError,
    },
    /// The broker answered with an error code.
    #[error("broker {addr} answered {code}: {message}")]
    Broker {
        /// Broker address.
        addr: SocketAddr,
        /// The error code.
        code: ErrorCode,
        /// The broker's message.
        message: String,
    },
    /// The broker answered with a frame of the wrong kind or correlation id.
    #[error("unexpected response from {addr}: {detail}")]
    UnexpectedResponse {
        /// Broker address.
        addr: SocketAddr,
        /// What was expected and what came.
        detail: String,
    },
    /// This client's side of a SASL exchange failed: the credentials cannot be used, the
    /// token provider failed, or the broker's SCRAM proof was wrong. (A refusal by the
    /// broker is [`TransportError::Broker`] with an authentication code.)
    #[error("SASL authentication with {addr} failed: {source}")]
    Sasl {
        /// Broker address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: SaslError,
    },
    /// A broker name did not resolve to an address.
    #[error("cannot resolve broker address '{name}': {reason}")]
    Resolve {
        /// The `host:port` given.
        name: String,
        /// Why.
        reason: String,
    },
    /// A request did not complete in time.
    #[error("request to {addr} timed out after {timeout:?}")]
    Timeout {
        /// Broker address.
        addr: SocketAddr,
        /// The timeout in force.
        timeout: Duration,
    },
}

impl TransportError {
    /// Whether trying again (after back-off, on a new connection if needed) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            TransportError::Unreachable { .. }
            | TransportError::ConnectionLost { .. }
            | TransportError::StreamClosed { .. }
            | TransportError::Timeout { .. } => true,
            TransportError::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// The broker's error code, when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Maps a quinn connection error, recognising TLS refusals.
    pub fn from_connection(addr: SocketAddr, e: quinn::ConnectionError) -> TransportError {
        use quinn::ConnectionError as C;
        let alert_of = |code: quinn::TransportErrorCode| {
            let v = u64::from(code);
            (0x100..0x200).contains(&v).then(|| (v - 0x100) as u8)
        };
        match &e {
            C::ConnectionClosed(close) => {
                if let Some(alert) = alert_of(close.error_code) {
                    return TransportError::TlsRejected {
                        addr,
                        by: Refuser::Broker,
                        alert: Some(alert),
                        detail: explain_alert(alert),
                    };
                }
            }
            C::TransportError(te) => {
                if let Some(alert) = alert_of(te.code) {
                    return TransportError::TlsRejected {
                        addr,
                        by: Refuser::Client,
                        alert: Some(alert),
                        detail: format!("broker certificate not accepted: {}", te.reason),
                    };
                }
            }
            C::TimedOut => {}
            _ => {}
        }
        TransportError::ConnectionLost { addr, source: e }
    }

    fn from_write(addr: SocketAddr, e: quinn::WriteError) -> TransportError {
        match e {
            quinn::WriteError::ConnectionLost(c) => Self::from_connection(addr, c),
            quinn::WriteError::Stopped(code) => {
                TransportError::StreamClosed { addr, detail: format!("stopped with code {code}") }
            }
            other => TransportError::StreamClosed { addr, detail: other.to_string() },
        }
    }

    fn from_read(addr: SocketAddr, e: quinn::ReadError) -> TransportError {
        match e {
            quinn::ReadError::ConnectionLost(c) => Self::from_connection(addr, c),
            quinn::ReadError::Reset(code) => {
                TransportError::StreamClosed { addr, detail: format!("reset with code {code}") }
            }
            other => TransportError::StreamClosed { addr, detail: other.to_string() },
        }
    }
}

fn explain_alert(alert: u8) -> String {
    let why = match alert {
        116 => "the broker requires a client certificate and none was presented",
        48 => "the client certificate is not signed by a CA the broker trusts",
        45 => "the client certificate has expired (or is not yet valid)",
        42 | 46 => "the client certificate was not accepted",
        120 => "no common application protocol (ALPN): the broker speaks qwire/1",
        _ => "the handshake failed",
    };
    format!("{} (TLS alert {alert}): {why}", tls_alert_name(alert))
}

/// A client endpoint: one UDP socket from which connections to brokers are made.
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    endpoint: quinn::Endpoint,
    connect_timeout: Duration,
}

impl ClientEndpoint {
    /// Binds a client endpoint on `bind` (use `127.0.0.1:0` / `[::1]:0` / `0.0.0.0:0`)
    /// with the given quinn client config. Must be called inside a tokio runtime.
    pub fn new(bind: SocketAddr, config: quinn::ClientConfig, connect_timeout: Duration) -> std::io::Result<Self> {
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(config);
        Ok(ClientEndpoint { endpoint, connect_timeout })
    }

    /// The underlying quinn endpoint.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Connects, sends `Hello`, and returns the connection once `HelloOk` arrives.
    /// `server_name` must match a SAN of the broker certificate (`localhost` for dev certs).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        client_id: &str,
    ) -> Result<BrokerConnection, TransportError> {
        self.connect_inner(None, addr, server_name, client_id).await
    }

    /// [`ClientEndpoint::connect`] with another client configuration (e.g. certificates
    /// read again after a rotation) instead of the endpoint's.
    pub async fn connect_with(
        &self,
        config: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        client_id: &str,
    ) -> Result<BrokerConnection, TransportError> {
        self.connect_inner(Some(config), addr, server_name, client_id).await
    }

    async fn connect_inner(
        &self,
        config: Option<quinn::ClientConfig>,
        addr: SocketAddr,
        server_name: &str,
        client_id: &str,
    ) -> Result<BrokerConnection, TransportError> {
        let attempt = async {
            let connecting = match config {
                Some(c) => self.endpoint.connect_with(c, addr, server_name),
                None => self.endpoint.connect(addr, server_name),
            }
            .map_err(|e| TransportError::Connect { addr, reason: e.to_string() })?;
            let conn = connecting.await.map_err(|e| match e {
                quinn::ConnectionError::TimedOut => TransportError::Unreachable { addr, timeout: self.connect_timeout },
                e => TransportError::from_connection(addr, e),
            })?;
            let (send, recv) = conn.open_bi().await.map_err(|e| TransportError::from_connection(addr, e))?;
            let mut control = FrameStream::new(addr, send, recv, MAX_FRAME_SIZE);
            let hello = Payload::Hello(Hello { version: PROTOCOL_VERSION, client_id: client_id.to_owned() });
            let hello_ok = match control.call(hello).await? {
                Payload::HelloOk(ok) => ok,
                other => {
                    return Err(TransportError::UnexpectedResponse {
                        addr,
                        detail: format!("expected HelloOk, got {:?}", other.kind()),
                    })
                }
            };
            control.max_frame = hello_ok.max_frame_size as usize;
            Ok(BrokerConnection { addr, conn, hello: hello_ok, control, reauth: None })
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Unreachable { addr, timeout: self.connect_timeout }),
        }
    }
}

/// A ready connection to one broker (the `Hello` exchange succeeded).
#[derive(Debug)]
pub struct BrokerConnection {
    addr: SocketAddr,
    conn: quinn::Connection,
    hello: HelloOk,
    control: FrameStream,
    /// Re-authenticates an expiring SASL session (PROTOCOL.md §20.6).
    reauth: Option<Reauthenticator>,
}

impl BrokerConnection {
    /// Authenticates with SASL when the broker asks for it (`HelloOk` named no principal:
    /// this client presented no certificate), then keeps an expiring session alive by
    /// re-authenticating on a stream of its own before it ends. A connection the broker
    /// authenticated by its certificate needs nothing (a certificate wins over SASL).
    pub async fn authenticate(&mut self, credentials: Option<&SaslCredentials>) -> Result<(), TransportError> {
        if !self.hello.principal.is_empty() {
            return Ok(());
        }
        let Some(credentials) = credentials else {
            return Err(TransportError::Sasl { addr: self.addr, source: SaslError::Required });
        };
        let session = super::sasl::authenticate(&mut self.control, self.addr, credentials).await?;
        self.hello.principal = session.principal.clone();
        let max_frame = self.hello.max_frame_size as usize;
        self.reauth = Reauthenticator::spawn(self.conn.clone(), self.addr, credentials.clone(), session, max_frame);
        Ok(())
    }

    /// The SASL session, when this connection authenticated with SASL and it expires: its
    /// lifetime as of the last (re-)authentication.
    pub fn sasl_session(&self) -> Option<Session> {
        self.reauth.as_ref().map(Reauthenticator::session)
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the broker said in `HelloOk` (principal, broker id, max frame size).
    pub fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// The underlying quinn connection.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.conn
    }

    /// The control stream opened for `Hello`; use it for admin and metadata requests.
    pub fn control(&mut self) -> &mut FrameStream {
        &mut self.control
    }

    /// Opens a new bidirectional stream for pipelined requests.
    pub async fn open_stream(&self) -> Result<FrameStream, TransportError> {
        let (send, recv) = self.conn.open_bi().await.map_err(|e| TransportError::from_connection(self.addr, e))?;
        Ok(FrameStream::new(self.addr, send, recv, self.hello.max_frame_size as usize))
    }

    /// Closes the connection with application code 0.
    pub fn close(&self, reason: &str) {
        self.conn.close(0u8.into(), reason.as_bytes());
    }
}

/// Sending half of a framed stream.
#[derive(Debug)]
pub struct FrameWriter {
    addr: SocketAddr,
    send: quinn::SendStream,
    scratch: BytesMut,
}

impl FrameWriter {
    /// Encodes and writes one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        self.scratch.clear();
        frame.encode(&mut self.scratch);
        let bytes = self.scratch.split().freeze();
        self.write_raw(&bytes).await
    }

    /// Writes pre-encoded bytes (several frames at once, or deliberately bad bytes in tests).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.send.write_all(bytes).await.map_err(|e| TransportError::from_write(self.addr, e))
    }

    /// Writes many encoded buffers with as few stream writes as quinn allows.
    pub async fn write_chunks(&mut self, chunks: &mut [bytes::Bytes]) -> Result<(), TransportError> {
        self.send.write_all_chunks(chunks).await.map_err(|e| TransportError::from_write(self.addr, e))
    }

    /// Writes as much of `chunks` as the stream takes now (waiting until it takes
    /// something) and returns how many chunks were written whole; a chunk written in part
    /// is advanced past what was written. Call again with the rest.
    pub async fn write_some_chunks(&mut self, chunks: &mut [bytes::Bytes]) -> Result<usize, TransportError> {
        let written = self.send.write_chunks(chunks).await.map_err(|e| TransportError::from_write(self.addr, e))?;
        Ok(written.chunks)
    }

    /// Finishes the send side (no more requests on this stream).
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Abandons the send side: the broker sees the stream reset with `code` and
    /// discards what it had not read.
    pub fn reset(&mut self, code: u32) {
        let _ = self.send.reset(quinn::VarInt::from_u32(code));
    }
}

/// Receiving half of a framed stream.
#[derive(Debug)]
pub struct FrameReader {
    addr: SocketAddr,
    recv: quinn::RecvStream,
    buf: BytesMut,
    max_frame: usize,
}

impl FrameReader {
    /// Stops reading: the broker is told (STOP_SENDING with `code`) to send nothing more.
    pub fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(quinn::VarInt::from_u32(code));
    }

    /// The next frame; `Ok(None)` when the broker finished the stream cleanly.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        loop {
            match Frame::decode(&mut self.buf, self.max_frame) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(source) => return Err(TransportError::BadFrame { addr: self.addr, source }),
            }
            match self.recv.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => {
                    return Err(TransportError::StreamClosed {
                        addr: self.addr,
                        detail: format!("stream ended inside a frame ({} bytes pending)", self.buf.len()),
                    })
                }
                Err(e) => return Err(TransportError::from_read(self.addr, e)),
            }
        }
    }
}

/// A bidirectional framed stream with request/response helpers.
#[derive(Debug)]
pub struct FrameStream {
    writer: FrameWriter,
    reader: FrameReader,
    max_frame: usize,
    next_correlation: u32,
}

impl FrameStream {
    pub(crate) fn new(addr: SocketAddr, send: quinn::SendStream, recv: quinn::RecvStream, max_frame: usize) -> Self {
        FrameStream {
            writer: FrameWriter { addr, send, scratch: BytesMut::with_capacity(4096) },
            reader: FrameReader { addr, recv, buf: BytesMut::with_capacity(64 * 1024), max_frame: MAX_FRAME_SIZE },
            max_frame,
            next_correlation: 1,
        }
    }

    /// The largest frame the broker accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The next correlation id this stream would use.
    pub fn next_correlation_id(&mut self) -> u32 {
        let id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        id
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), TransportError> {
        self.writer.send(frame).await
    }

    /// Writes raw bytes.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.writer.write_raw(bytes).await
    }

    /// Receives one frame.
    pub async fn recv(&mut self) -> Result<Option<Frame>, TransportError> {
        self.reader.recv().await
    }

    /// Sends `payload` with a fresh correlation id and waits for its response. An
    /// `Error` frame becomes [`TransportError::Broker`]; a `ProduceResult` is returned as is
    /// (its error code is the caller's to read).
    pub async fn call(&mut self, payload: Payload) -> Result<Payload, TransportError> {
        let addr = self.writer.addr;
        let correlation_id = self.next_correlation_id();
        self.send(&Frame { correlation_id, payload }).await?;
        let frame = self.recv().await?.ok_or_else(|| TransportError::StreamClosed {
            addr,
            detail: "stream finished before the response".into(),
        })?;
        if frame.correlation_id != correlation_id {
            return Err(TransportError::UnexpectedResponse {
                addr,
                detail: format!("correlation id {} for request {}", frame.correlation_id, correlation_id),
            });
        }
        match frame.payload {
            Payload::Error(e) => Err(TransportError::Broker { addr, code: e.code, message: e.message }),
            Payload::Cluster(crate::protocol::cluster::ClusterPayload::NotLeader(n)) => {
                let leader = if n.leader < 0 {
                    "no leader is known".to_string()
                } else {
                    format!("the leader is broker {} at {}:{}", n.leader, n.host, n.port)
                };
                let message =
                    format!("not the leader of {}-{} ({leader}, epoch {})", n.topic, n.partition, n.leader_epoch);
                Err(TransportError::Broker { addr, code: n.error, message })
            }
            p if (p.kind() as u8) < 0x80 => Err(TransportError::UnexpectedResponse {
                addr,
                detail: format!("a request frame ({:?}) in a response", p.kind()),
            }),
            p => Ok(p),
        }
    }

    /// Splits into independently owned halves (one task writes, another reads).
    pub fn split(self) -> (FrameWriter, FrameReader) {
        (self.writer, self.reader)
    }

    /// Finishes the send side.
    pub fn finish(&mut self) {
        self.writer.finish();
    }
}

/// Checks that a payload is of the expected kind, for callers of [`FrameStream::call`].
pub fn expect_kind(addr: SocketAddr, p: &Payload, want: FrameKind) -> Result<(), TransportError> {
    if p.kind() == want {
        Ok(())
    } else {
        Err(TransportError::UnexpectedResponse { addr, detail: format!("expected {want:?}, got {:?}", p.kind()) })
    }
}
