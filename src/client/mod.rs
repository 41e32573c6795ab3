//! A plain request/response client: admin requests, metadata, fetch, and single-batch
//! produce. The CLI's `consume` and `topics` commands and the tests use it; the
//! high-throughput path is the producer engine.

mod cluster;
#[cfg(feature = "schema")]
mod schema;
#[cfg(feature = "schema")]
pub use schema::{RegistryClient, SchemaVersionInfo};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::CertificateDer;

use crate::auth::client::{SaslCredentials, SaslError};
use crate::protocol::frame::{
    CreateTopic, Fetch, FetchOk, InitProducerId, Metadata, MetadataOk, Produce, ProduceResult, TopicMetadata,
};
use crate::protocol::{Acks, FrameKind, Payload, RecordBatch, StoredRecord};
use crate::transport::certs::{load_certs, CertError, Identity};
use crate::transport::connection::expect_kind;
use crate::transport::tls::{client_tls, quinn_client_config, QuicTuning};
use crate::transport::{BrokerConnection, ClientEndpoint, FrameStream, TransportError};

/// Default time to establish a connection (QUIC + TLS + Hello).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Decompressed size limit when decoding fetched batches (64 MiB).
pub const FETCH_DECOMPRESS_LIMIT: usize = 64 << 20;

/// How to reach and authenticate to a broker.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Broker address.
    pub addr: SocketAddr,
    /// Name the broker certificate must carry (`localhost` for dev certs).
    pub server_name: String,
    /// Client certificate and key. `None`: the client presents no certificate and, on a
    /// broker whose client authentication is optional, authenticates with `sasl`.
    pub identity: Option<Identity>,
    /// CA that signed the broker certificate.
    pub ca: Vec<CertificateDer<'static>>,
    /// Client id reported in `Hello`.
    pub client_id: String,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// QUIC tuning.
    pub tuning: QuicTuning,
    /// SASL credentials for a client without a certificate (PROTOCOL.md §20). Not used
    /// with a certificate: [`Client::connect`] refuses both at once.
    pub sasl: Option<SaslCredentials>,
}

impl ConnectConfig {
    /// No certificate: trusts the CA in `ca_file` for the broker and authenticates with
    /// `sasl` (the broker must run with client auth `optional`).
    pub fn with_sasl(addr: SocketAddr, ca_file: &Path, sasl: SaslCredentials) -> Result<ConnectConfig, CertError> {
        Ok(ConnectConfig {
            addr,
            server_name: "localhost".into(),
            identity: None,
            ca: load_certs(ca_file)?,
            client_id: format!("qwire-sasl-{}", sasl.mechanism().name().to_ascii_lowercase()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tuning: QuicTuning { keep_alive: Some(Duration::from_secs(5)), ..QuicTuning::default() },
            sasl: Some(sasl),
        })
    }

    /// Uses `ca.crt` and `NAME.crt`/`NAME.key` from a directory made by `qwire certs`.
    pub fn from_certs_dir(addr: SocketAddr, dir: &Path, client_name: &str) -> Result<ConnectConfig, CertError> {
        Ok(ConnectConfig {
            addr,
            server_name: "localhost".into(),
            identity: Some(Identity::load(dir, client_name)?),
            ca: load_certs(&dir.join("ca.crt"))?,
            client_id: format!("qwire-{client_name}"),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tuning: QuicTuning { keep_alive: Some(Duration::from_secs(5)), ..QuicTuning::default() },
            sasl: None,
        })
    }

    /// Binds a client endpoint for this config's address family.
    pub fn endpoint(&self) -> Result<ClientEndpoint, TransportError> {
        let tls = client_tls(self.identity.as_ref(), &self.ca)
            .map_err(|e| TransportError::Connect { addr: self.addr, reason: e.to_string() })?;
        let quic = quinn_client_config(tls, &self.tuning)
            .map_err(|e| TransportError::Connect { addr: self.addr, reason: e.to_string() })?;
        let bind: SocketAddr = if self.addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        ClientEndpoint::new(bind, quic, self.connect_timeout)
            .map_err(|e| TransportError::Connect { addr: self.addr, reason: format!("binding UDP socket: {e}") })
    }
}

/// A connected request/response client.
#[derive(Debug)]
pub struct Client {
    endpoint: ClientEndpoint,
    conn: BrokerConnection,
}

/// Records read by [`Client::fetch_records`].
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Records at or after the requested offset.
    pub records: Vec<StoredRecord>,
    /// Offset to fetch next.
    pub next_offset: i64,
    /// The partition's end offset at the time of the fetch.
    pub high_watermark: i64,
}

impl Client {
    /// Connects and completes the `Hello` exchange, and SASL authentication when the
    /// client has no certificate.
    pub async fn connect(cfg: &ConnectConfig) -> Result<Client, TransportError> {
        if cfg.identity.is_some() && cfg.sasl.is_some() {
            return Err(TransportError::Sasl {
                addr: cfg.addr,
                source: SaslError::InvalidCredentials(
                    "a client certificate and SASL credentials are both configured; a broker authenticates a \
                     connection by its certificate when it has one: configure one or the other"
                        .into(),
                ),
            });
        }
        let endpoint = cfg.endpoint()?;
        let mut conn = endpoint.connect(cfg.addr, &cfg.server_name, &cfg.client_id).await?;
        if let Err(e) = conn.authenticate(cfg.sasl.as_ref()).await {
            conn.close("authentication failed");
            return Err(e);
        }
        Ok(Client { endpoint, conn })
    }

    /// The principal the broker sees.
    pub fn principal(&self) -> &str {
        &self.conn.hello().principal
    }

    /// The connection.
    pub fn connection(&self) -> &BrokerConnection {
        &self.conn
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &ClientEndpoint {
        &self.endpoint
    }

    /// Opens another stream on the connection.
    pub async fn open_stream(&self) -> Result<FrameStream, TransportError> {
        self.conn.open_stream().await
    }

    /// Metadata for the named topics (all visible topics when empty).
    pub async fn metadata(&mut self, topics: &[&str]) -> Result<MetadataOk, TransportError> {
        let addr = self.conn.addr();
        let p = self
            .conn
            .control()
            .call(Payload::Metadata(Metadata { topics: topics.iter().map(|s| s.to_string()).collect() }))
            .await?;
        expect_kind(addr, &p, FrameKind::MetadataOk)?;
        let Payload::MetadataOk(m) = p else { unreachable!("kind checked") };
        Ok(m)
    }

    /// Every topic the principal may see (some read, write or admin permission), without
    /// creating anything.
    pub async fn list_topics(&mut self) -> Result<Vec<TopicMetadata>, TransportError> {
        Ok(self.metadata(&[]).await?.topics)
    }

    /// One topic's metadata, or `None` when it does not exist or the principal may not see
    /// it. Unlike `metadata(&[topic])`, this never auto-creates the topic (the broker
    /// creates a topic named in a metadata request when the principal may write it).
    pub async fn find_topic(&mut self, topic: &str) -> Result<Option<TopicMetadata>, TransportError> {
        Ok(self.list_topics().await?.into_iter().find(|t| t.name == topic))
    }

    /// Creates a topic; returns its partition count.
    pub async fn create_topic(&mut self, topic: &str, partitions: u32) -> Result<u32, TransportError> {
        let addr = self.conn.addr();
        let p = self.conn.control().call(Payload::CreateTopic(CreateTopic { topic: topic.into(), partitions })).await?;
        expect_kind(addr, &p, FrameKind::CreateTopicOk)?;
        let Payload::CreateTopicOk(c) = p else { unreachable!("kind checked") };
        Ok(c.partitions)
    }

    /// Asks for a producer id (`-1, -1`) or an epoch bump.
    pub async fn init_producer_id(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), TransportError> {
        let addr = self.conn.addr();
        let p =
            self.conn.control().call(Payload::InitProducerId(InitProducerId { producer_id, producer_epoch })).await?;
        expect_kind(addr, &p, FrameKind::InitProducerIdOk)?;
        let Payload::InitProducerIdOk(ok) = p else { unreachable!("kind checked") };
        Ok((ok.producer_id, ok.producer_epoch))
    }

    /// Sends one batch and waits for its result (not with [`Acks::None`], which has no
    /// response).
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> Result<ProduceResult, TransportError> {
        let addr = self.conn.addr();
        assert!(acks != Acks::None, "acks=none has no response to wait for");
        let p = self
            .conn
            .control()
            .call(Payload::Produce(Produce { topic: topic.into(), partition, acks, timeout_ms: 0, batch }))
            .await?;
        expect_kind(addr, &p, FrameKind::ProduceResult)?;
        let Payload::ProduceResult(r) = p else { unreachable!("kind checked") };
        Ok(r)
    }

    /// Raw fetch: whole stored batches from `offset`.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<FetchOk, TransportError> {
        let addr = self.conn.addr();
        let p = self
            .conn
            .control()
            .call(Payload::Fetch(Fetch { topic: topic.into(), partition, offset, max_bytes }))
            .await?;
        expect_kind(addr, &p, FrameKind::FetchOk)?;
        let Payload::FetchOk(f) = p else { unreachable!("kind checked") };
        Ok(f)
    }

    /// Fetches and decodes records from `offset`, dropping records before it.
    pub async fn fetch_records(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: u32,
    ) -> Result<Fetched, TransportError> {
        let addr = self.conn.addr();
        let f = self.fetch(topic, partition, offset, max_bytes).await?;
        let bad = |e: crate::protocol::DecodeError| TransportError::UnexpectedResponse {
            addr,
            detail: format!("fetched data does not decode: {e}"),
        };
        let mut records = Vec::new();
        let mut next_offset = offset;
        for batch in RecordBatch::split_all(f.batches).map_err(bad)? {
            next_offset = next_offset.max(batch.header().last_offset() + 1);
            records
                .extend(batch.records(FETCH_DECOMPRESS_LIMIT).map_err(bad)?.into_iter().filter(|r| r.offset >= offset));
        }
        Ok(Fetched { records, next_offset, high_watermark: f.high_watermark })
    }

    /// Reads every record of a partition from `offset` to the current end.
    pub async fn fetch_all(
        &mut self,
        topic: &str,
        partition: u32,
        mut offset: i64,
    ) -> Result<Vec<StoredRecord>, TransportError> {
        let mut out = Vec::new();
        loop {
            let f = self.fetch_records(topic, partition, offset, 1 << 20).await?;
            out.extend(f.records);
            if f.next_offset >= f.high_watermark || f.next_offset == offset {
                return Ok(out);
            }
            offset = f.next_offset;
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close("client closing");
    }
}
