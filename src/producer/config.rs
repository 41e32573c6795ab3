//! Producer configuration: typed settings, documented defaults, and the checks `build`
//! runs so invalid combinations fail early with a clear message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use super::error::{ErrorKind, Persistence, ProduceError};
use super::partitioner::PartitionStrategy;
use crate::auth::client::SaslCredentials;
use crate::auth::scram::ScramHash;
use crate::auth::token::TokenProvider;
use crate::auth::Secret;
use crate::protocol::{Acks, Compression, MAX_FRAME_SIZE};
use crate::transport::certs::{load_certs, CertError, Identity};

/// Default `linger`: 5 ms, Kafka 4.0's and librdkafka's default. Trades at most 5 ms of
/// latency for fuller batches; 0 sends as soon as the driver runs.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Default `batch_size`: 64 KiB. Bigger than Java's 16 KiB because every QUIC frame and
/// stream write has a fixed cost; small enough to keep latency of a full batch low.
pub const DEFAULT_BATCH_SIZE: usize = 64 * 1024;
/// Default `buffer_memory`: 64 MiB of records waiting or in flight.
pub const DEFAULT_BUFFER_MEMORY: usize = 64 * 1024 * 1024;
/// Default `max_block`: 60 s, Kafka's `max.block.ms`.
pub const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(60);
/// Default `request_timeout`: 30 s, Kafka's `request.timeout.ms`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `delivery_timeout`: 120 s, Kafka's `delivery.timeout.ms`.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `max_record_size`: 1 MiB, Kafka's `max.request.size`.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;
/// Kafka's limit on in-flight batches per partition with idempotence (the broker
/// remembers 5 batches per producer and partition).
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// The longest any duration setting may be: 365 days. `build` refuses a longer one (a
/// `Duration::MAX` "forever", say) with an error naming the setting: a deadline a year out
/// is "never" in practice, and the cap keeps every deadline the producer computes
/// representable. `close(timeout)` takes any duration (longer ones count as this).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Retry back-off: exponential from `base` to `max`, each delay randomised by ±`jitter`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay. Default 100 ms.
    pub base: Duration,
    /// Largest delay. Default 1 s.
    pub max: Duration,
    /// Relative jitter in 0..=1. Default 0.2 (±20 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1), jitter: 0.2 }
    }
}

impl Backoff {
    /// The delay before attempt number `attempt` (1 = first retry), with `unit` in
    /// `[0, 1)` choosing the jitter (pass a random number).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let capped = exp.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        // Saturates instead of panicking on durations too large for a `Duration`.
        Duration::try_from_secs_f64((capped * factor).max(0.0)).unwrap_or(Duration::MAX)
    }
}

/// TLS material for the producer: the CA that signed the broker certificate, and this
/// client's certificate (mutual TLS, what qwire brokers require by default). Without a
/// certificate ([`TlsConfig::ca_only`]) the producer authenticates with SASL
/// ([`ProducerBuilder::sasl`]) to a broker whose client authentication is optional; TLS
/// still verifies the broker.
///
/// Loaded with [`TlsConfig::from_dir`], the files are read again whenever a broker has
/// refused the certificate and the producer tries once more (after
/// `circuit_breaker_recovery`), so a rotated certificate is picked up without a new
/// producer.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// CA certificates trusted for the broker.
    pub ca: Vec<CertificateDer<'static>>,
    /// Client certificate chain and key; `None` to authenticate with SASL instead.
    pub identity: Option<Identity>,
    /// Name the broker certificate must carry. Default `localhost`.
    pub server_name: String,
    /// Where the material was read from (directory, client name), to read it again.
    source: Option<(PathBuf, String)>,
}

impl TlsConfig {
    /// TLS material given in memory (never read again).
    pub fn new(ca: Vec<CertificateDer<'static>>, identity: Identity) -> TlsConfig {
        TlsConfig { ca, identity: Some(identity), server_name: "localhost".into(), source: None }
    }

    /// Only the CA that verifies the broker, no client certificate: for a producer that
    /// authenticates with SASL.
    pub fn ca_only(ca: Vec<CertificateDer<'static>>) -> TlsConfig {
        TlsConfig { ca, identity: None, server_name: "localhost".into(), source: None }
    }

    /// [`TlsConfig::ca_only`] with the CA read from a PEM file.
    pub fn ca_file(path: &Path) -> Result<TlsConfig, CertError> {
        Ok(TlsConfig::ca_only(load_certs(path)?))
    }

    /// Loads `ca.crt` and `NAME.crt`/`NAME.key` from a directory made by `qwire certs`.
    pub fn from_dir(dir: &Path, client_name: &str) -> Result<TlsConfig, CertError> {
        Ok(TlsConfig {
            ca: load_certs(&dir.join("ca.crt"))?,
            identity: Some(Identity::load(dir, client_name)?),
            server_name: "localhost".into(),
            source: Some((dir.to_path_buf(), client_name.to_owned())),
        })
    }

    /// The same material read again from its files (itself when it was given in memory).
    pub fn reload(&self) -> Result<TlsConfig, CertError> {
        match &self.source {
            Some((dir, name)) => {
                Ok(TlsConfig { server_name: self.server_name.clone(), ..TlsConfig::from_dir(dir, name)? })
            }
            None => Ok(self.clone()),
        }
    }
}

/// Every producer setting. Build one with [`crate::producer::Producer::builder`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub(crate) bootstrap: Vec<String>,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) sasl: Option<SaslCredentials>,
    pub(crate) client_id: String,
    pub(crate) acks: Acks,
    pub(crate) idempotence: bool,
    pub(crate) batch_size: usize,
    pub(crate) linger: Duration,
    pub(crate) compression: Compression,
    pub(crate) compression_level: Option<i32>,
    pub(crate) max_in_flight: usize,
    pub(crate) buffer_memory: usize,
    pub(crate) max_block: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) delivery_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Backoff,
    pub(crate) reconnect_backoff: Backoff,
    pub(crate) partitioner: PartitionStrategy,
    pub(crate) max_record_size: usize,
    pub(crate) connections_per_broker: usize,
    pub(crate) streams_per_connection: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) circuit_breaker_threshold: u32,
    pub(crate) circuit_breaker_recovery: Duration,
    pub(crate) metadata_max_age: Duration,
    pub(crate) mtu_upper_bound: u16,
    /// Where records validated against a schema carry the schema id.
    #[cfg(feature = "schema")]
    pub(crate) schema_id_placement: crate::schema::IdPlacement,
    /// Default schema subject per topic, for records that name none.
    #[cfg(feature = "schema")]
    pub(crate) schema_subjects: std::collections::BTreeMap<String, String>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap: Vec::new(),
            tls: None,
            sasl: None,
            client_id: "qwire-producer".into(),
            acks: Acks::All,
            idempotence: true,
            batch_size: DEFAULT_BATCH_SIZE,
            linger: DEFAULT_LINGER,
            compression: Compression::None,
            compression_level: None,
            max_in_flight: MAX_IN_FLIGHT_IDEMPOTENT,
            buffer_memory: DEFAULT_BUFFER_MEMORY,
            max_block: DEFAULT_MAX_BLOCK,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            retries: u32::MAX,
            retry_backoff: Backoff::default(),
            reconnect_backoff: Backoff { base: Duration::from_millis(50), max: Duration::from_secs(2), jitter: 0.2 },
            partitioner: PartitionStrategy::Default,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            connections_per_broker: 1,
            streams_per_connection: 8,
            connect_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            circuit_breaker_threshold: 10,
            circuit_breaker_recovery: Duration::from_secs(10),
            metadata_max_age: Duration::from_secs(300),
            mtu_upper_bound: 1452,
            #[cfg(feature = "schema")]
            schema_id_placement: crate::schema::IdPlacement::Header,
            #[cfg(feature = "schema")]
            schema_subjects: std::collections::BTreeMap::new(),
        }
    }
}

/// Builder for [`crate::producer::Producer`]. Every setter documents its default. Every
/// duration setting is at most [`MAX_DURATION`] (365 days); `build` refuses a longer one.
#[derive(Debug, Clone, Default)]
pub struct ProducerBuilder {
    pub(crate) config: ProducerConfig,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ProducerBuilder {
    /// Adds a bootstrap broker (`host:port`). At least one is required.
    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.config.bootstrap.push(addr.into());
        self
    }

    /// Where a record validated against a schema carries the schema id: a
    /// `qwire.schema_id` header (default; the value stays the bare payload) or Confluent's
    /// wire format in front of the value (for Confluent deserializers). Cargo feature
    /// `schema`.
    #[cfg(feature = "schema")]
    pub fn schema_id_placement(mut self, placement: crate::schema::IdPlacement) -> Self {
        self.config.schema_id_placement = placement;
        self
    }

    /// Validates every record of `topic` that names no subject against `subject`'s latest
    /// schema (by convention `{topic}-value`). Default: none, records without a subject are
    /// not validated. Cargo feature `schema`.
    #[cfg(feature = "schema")]
    pub fn schema_subject_for(mut self, topic: impl Into<String>, subject: impl Into<String>) -> Self {
        self.config.schema_subjects.insert(topic.into(), subject.into());
        self
    }

    /// TLS material (required): the CA that verifies the broker, and the client certificate
    /// unless the producer authenticates with SASL.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// SASL credentials, for a producer without a client certificate ([`TlsConfig::ca_only`])
    /// and a broker whose client authentication is optional. Each connection authenticates
    /// after `Hello`, and an expiring session re-authenticates on the live connection
    /// before it ends, without disturbing the records in flight. Default: none.
    pub fn sasl(mut self, credentials: SaslCredentials) -> Self {
        self.config.sasl = Some(credentials);
        self
    }

    /// SASL PLAIN: the password travels (inside TLS) and the broker checks it. Prefer SCRAM.
    pub fn sasl_plain(self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.sasl(SaslCredentials::plain(username, password))
    }

    /// SASL SCRAM-SHA-256: the password never leaves the producer.
    pub fn sasl_scram_sha256(self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.sasl(SaslCredentials::scram(ScramHash::Sha256, username, password))
    }

    /// SASL SCRAM-SHA-512.
    pub fn sasl_scram_sha512(self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.sasl(SaslCredentials::scram(ScramHash::Sha512, username, password))
    }

    /// OAUTHBEARER with JWTs from `provider`, which is called for every authentication:
    /// each new connection and each re-authentication before a session (a token) expires.
    pub fn token_provider(self, provider: Arc<dyn TokenProvider>) -> Self {
        self.sasl(SaslCredentials::token(provider))
    }

    /// Client id reported to the broker. Default `qwire-producer`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    setter!(
        /// Acknowledgement level. Default [`Acks::All`] (fsync'd). `Leader` answers after the
        /// append (page cache); `None` gets no answer and no offsets.
        acks: Acks
    );
    setter!(
        /// Idempotence: producer id + per-partition sequence numbers so retries never
        /// duplicate or reorder. Default on. Needs acks `Leader` or `All` and
        /// `max_in_flight` ≤ 5.
        idempotence: bool
    );
    setter!(
        /// Seal a partition's batch when it reaches this many bytes. Default 64 KiB. A batch
        /// is also kept within the frame limit its broker announces (`HelloOk`), and split
        /// and resent if a broker refuses it as too large.
        batch_size: usize
    );
    setter!(
        /// How long a partition's first record may wait for more before its batch is sealed.
        /// Default 5 ms; 0 seals as soon as the driver runs. `flush()` cuts it short.
        linger: std::time::Duration
    );
    setter!(
        /// Per-batch compression. Default none. A batch that does not shrink goes uncompressed.
        compression: Compression
    );
    setter!(
        /// Compression level (gzip 0–9, zstd 1–22); `None` is the codec's default.
        compression_level: Option<i32>
    );
    setter!(
        /// Unacknowledged batches per partition. Default 5 (the most idempotence allows).
        /// Without idempotence, more than 1 can reorder records on retry (as in Kafka).
        max_in_flight: usize
    );
    setter!(
        /// Memory the producer may hold for records, queued or in flight. Default 64 MiB.
        /// Each record is charged its encoded size plus a fixed overhead
        /// ([`RECORD_OVERHEAD`](crate::producer::RECORD_OVERHEAD): its queue entry, its
        /// delivery and its bookkeeping until acknowledged); batch buffers are sized to
        /// their records, and a partition whose in-flight window is full is not sealed at
        /// linger (its records wait and make a fuller batch). So the process's resident
        /// memory for a producer stays within about this much plus a fixed amount, even
        /// against a slow broker (PERF.md).
        buffer_memory: usize
    );
    setter!(
        /// How long `send` waits for buffer memory before failing with the record handed
        /// back. Default 60 s. `try_send` never waits.
        max_block: std::time::Duration
    );
    setter!(
        /// How long the broker may take to satisfy a produce request's acks (sent to it as
        /// the request's `timeout_ms`; it answers `REQUEST_TIMED_OUT` itself when it cannot).
        /// The producer gives a request this plus a margin (a fifth, at least 500 ms),
        /// counted from when the request was written, before it takes the stream for stuck:
        /// then that stream alone is reset and replaced and its batches resent; other
        /// partitions' streams and the connection go on. Control requests (metadata,
        /// producer id) get the same allowance, then are asked again. Default 30 s.
        request_timeout: std::time::Duration
    );
    setter!(
        /// Upper bound on the time from `send` to success or failure, retries included: a
        /// record still queued, waiting to be resent or in flight when it is reached fails
        /// with `DeliveryTimeout` (in flight: possibly persisted). Default 120 s. Must be ≥
        /// `linger` + `request_timeout`.
        delivery_timeout: std::time::Duration
    );
    setter!(
        /// Retries per batch (bounded by the delivery timeout). Default unlimited.
        retries: u32
    );
    setter!(
        /// Retry back-off. Default 100 ms doubling to 1 s, ±20 % jitter.
        retry_backoff: Backoff
    );
    setter!(
        /// Reconnect back-off. Default 50 ms doubling to 2 s, ±20 % jitter.
        reconnect_backoff: Backoff
    );
    setter!(
        /// Partitioner for records without an explicit partition. Default: key → murmur2
        /// (Kafka-compatible), no key → sticky.
        partitioner: PartitionStrategy
    );
    setter!(
        /// Largest encoded record accepted by `send`. Default 1 MiB.
        max_record_size: usize
    );
    setter!(
        /// QUIC connections per broker. Default 1 (one connection has ~6 Gbit/s of room).
        connections_per_broker: usize
    );
    setter!(
        /// Long-lived data streams per connection; a partition always uses the same one.
        /// Default 8, so a lost packet on one partition's stream does not stall the others.
        streams_per_connection: usize
    );
    setter!(
        /// Time to connect (QUIC + TLS + Hello). Default 10 s.
        connect_timeout: std::time::Duration
    );
    setter!(
        /// QUIC keep-alive interval. Default 5 s.
        keep_alive: std::time::Duration
    );
    setter!(
        /// QUIC idle timeout. Default 30 s.
        idle_timeout: std::time::Duration
    );
    setter!(
        /// Consecutive connection failures that open a broker's circuit breaker (waiting
        /// batches then fail fast instead of waiting out the delivery timeout; a refused
        /// certificate opens it at once). Failures count while no connection to the broker
        /// is up; a connection lost less than `circuit_breaker_recovery` after it opened
        /// counts as a failure (and grows the reconnect back-off). Default 10:
        /// with the default reconnect back-off that is about 9 s of a broker being
        /// unreachable, longer than a routine broker restart.
        circuit_breaker_threshold: u32
    );
    setter!(
        /// How long an open breaker waits before one trial connection (half-open; after a
        /// refused certificate the trial reads the certificate files again). A failed trial
        /// opens it for another period. Default 10 s.
        circuit_breaker_recovery: std::time::Duration
    );
    setter!(
        /// Topic metadata is refreshed at least this often. Default 5 min.
        metadata_max_age: std::time::Duration
    );
    setter!(
        /// Upper bound for QUIC path MTU discovery. Default 1452 (Ethernet paths).
        mtu_upper_bound: u16
    );

    /// The configuration as built so far.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }
}

fn invalid(msg: String) -> ProduceError {
    ProduceError::new(ErrorKind::Config, Persistence::NotPersisted, msg)
}

impl ProducerConfig {
    /// Checks every rule `build` enforces.
    pub fn validate(&self) -> Result<(), ProduceError> {
        if self.bootstrap.is_empty() {
            return Err(invalid("no bootstrap broker: call .bootstrap(\"host:port\")".into()));
        }
        let Some(tls) = &self.tls else {
            return Err(invalid(
                "no TLS configuration: call .tls(..) with the broker's CA and a client certificate (or the CA alone \
                 with SASL credentials)"
                    .into(),
            ));
        };
        match (&tls.identity, &self.sasl) {
            (None, None) => {
                return Err(invalid(
                    "no client certificate and no SASL credentials: give the TLS configuration a certificate, or \
                     call .sasl(..)"
                        .into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "a client certificate and SASL credentials are both configured; a broker authenticates a \
                     connection by its certificate when it has one: configure one or the other"
                        .into(),
                ))
            }
            (None, Some(creds)) => creds.validate().map_err(|e| invalid(e.to_string()))?,
            (Some(_), None) => {}
        }
        let durations = [
            ("linger", self.linger),
            ("max_block", self.max_block),
            ("request_timeout", self.request_timeout),
            ("delivery_timeout", self.delivery_timeout),
            ("connect_timeout", self.connect_timeout),
            ("keep_alive", self.keep_alive),
            ("idle_timeout", self.idle_timeout),
            ("circuit_breaker_recovery", self.circuit_breaker_recovery),
            ("metadata_max_age", self.metadata_max_age),
            ("retry_backoff", self.retry_backoff.base.max(self.retry_backoff.max)),
            ("reconnect_backoff", self.reconnect_backoff.base.max(self.reconnect_backoff.max)),
        ];
        if let Some((name, d)) = durations.iter().find(|(_, d)| *d > MAX_DURATION) {
            return Err(invalid(format!(
                "{name} ({d:?}) must be at most {} days (MAX_DURATION)",
                MAX_DURATION.as_secs() / 86_400
            )));
        }
        if self.idempotence && self.acks == Acks::None {
            return Err(invalid(
                "idempotence needs acknowledgements: use acks Leader or All, or turn idempotence off".into(),
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight must be at least 1".into()));
        }
        if self.idempotence && self.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
            return Err(invalid(format!(
                "max_in_flight {} exceeds {MAX_IN_FLIGHT_IDEMPOTENT}, the most idempotence allows \
                 (the broker remembers {MAX_IN_FLIGHT_IDEMPOTENT} batches per partition)",
                self.max_in_flight
            )));
        }
        let frame_room = MAX_FRAME_SIZE - 512;
        if self.batch_size == 0 || self.batch_size > frame_room {
            return Err(invalid(format!(
                "batch_size must be between 1 and {frame_room} bytes, got {}",
                self.batch_size
            )));
        }
        if self.max_record_size == 0 || self.max_record_size > frame_room {
            return Err(invalid(format!(
                "max_record_size must be between 1 and {frame_room} bytes, got {}",
                self.max_record_size
            )));
        }
        if self.buffer_memory < self.batch_size.max(self.max_record_size) {
            return Err(invalid(format!(
                "buffer_memory ({}) must hold at least one batch and one record (batch_size {}, max_record_size {})",
                self.buffer_memory, self.batch_size, self.max_record_size
            )));
        }
        if self.delivery_timeout < self.linger + self.request_timeout {
            return Err(invalid(format!(
                "delivery_timeout ({:?}) must be at least linger + request_timeout ({:?})",
                self.delivery_timeout,
                self.linger + self.request_timeout
            )));
        }
        if self.connections_per_broker == 0 || self.streams_per_connection == 0 {
            return Err(invalid("connections_per_broker and streams_per_connection must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.retry_backoff.jitter) || !(0.0..=1.0).contains(&self.reconnect_backoff.jitter) {
            return Err(invalid("back-off jitter must be between 0 and 1".into()));
        }
        if let (Compression::Gzip, Some(l)) = (self.compression, self.compression_level) {
            if !(0..=9).contains(&l) {
                return Err(invalid(format!("gzip level must be 0–9, got {l}")));
            }
        }
        if let (Compression::Zstd, Some(l)) = (self.compression, self.compression_level) {
            if !(1..=22).contains(&l) {
                return Err(invalid(format!("zstd level must be 1–22, got {l}")));
            }
        }
        Ok(())
    }

    /// Acknowledgement level.
    pub fn acks(&self) -> Acks {
        self.acks
    }

    /// Whether idempotence is on.
    pub fn idempotence(&self) -> bool {
        self.idempotence
    }

    /// Batch size in bytes.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Linger.
    pub fn linger(&self) -> Duration {
        self.linger
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ProducerConfig {
        let dir = tempfile::tempdir().unwrap();
        crate::transport::certs::generate_dev_certs(dir.path(), &["c".into()], &[]).unwrap();
        ProducerConfig {
            bootstrap: vec!["127.0.0.1:1".into()],
            tls: Some(TlsConfig::from_dir(dir.path(), "c").unwrap()),
            ..ProducerConfig::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_combinations_are_refused_with_a_reason() {
        let ok = base();
        ok.validate().unwrap();
        let cases: Vec<(ProducerConfig, &str)> = vec![
            (ProducerConfig { acks: Acks::None, ..base() }, "idempotence needs acknowledgements"),
            (ProducerConfig { max_in_flight: 6, ..base() }, "exceeds 5"),
            (ProducerConfig { batch_size: 0, ..base() }, "batch_size"),
            (ProducerConfig { buffer_memory: 1000, ..base() }, "buffer_memory"),
            (ProducerConfig { delivery_timeout: Duration::from_secs(1), ..base() }, "delivery_timeout"),
            (ProducerConfig { bootstrap: vec![], ..base() }, "bootstrap"),
            (ProducerConfig { tls: None, ..base() }, "TLS"),
            (ProducerConfig { compression: Compression::Zstd, compression_level: Some(40), ..base() }, "zstd level"),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.to_string().contains(needle), "{err} should mention {needle}");
            assert_eq!(err.kind(), ErrorKind::Config);
        }
        // Without idempotence, acks=none and more in flight are fine.
        ProducerConfig { idempotence: false, acks: Acks::None, max_in_flight: 10, ..base() }.validate().unwrap();
    }

    #[test]
    fn durations_beyond_the_cap_are_refused_with_the_setting_named() {
        let huge = Duration::MAX;
        let cases: Vec<(ProducerConfig, &str)> = vec![
            (ProducerConfig { delivery_timeout: huge, ..base() }, "delivery_timeout"),
            (ProducerConfig { max_block: huge, ..base() }, "max_block"),
            (ProducerConfig { request_timeout: huge, delivery_timeout: huge, ..base() }, "request_timeout"),
            (ProducerConfig { linger: huge, ..base() }, "linger"),
            (ProducerConfig { connect_timeout: huge, ..base() }, "connect_timeout"),
            (ProducerConfig { circuit_breaker_recovery: huge, ..base() }, "circuit_breaker_recovery"),
            (ProducerConfig { metadata_max_age: huge, ..base() }, "metadata_max_age"),
            (ProducerConfig { keep_alive: huge, ..base() }, "keep_alive"),
            (ProducerConfig { idle_timeout: huge, ..base() }, "idle_timeout"),
            (ProducerConfig { retry_backoff: Backoff { max: huge, ..Backoff::default() }, ..base() }, "retry_backoff"),
            (
                ProducerConfig { reconnect_backoff: Backoff { base: huge, max: huge, jitter: 0.2 }, ..base() },
                "reconnect_backoff",
            ),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.to_string().contains(needle), "{err} should name {needle}");
            assert!(err.to_string().contains("at most"), "{err} should give the cap");
        }
        // The cap itself is fine.
        ProducerConfig { delivery_timeout: MAX_DURATION, max_block: MAX_DURATION, ..base() }.validate().unwrap();
    }

    #[test]
    fn a_backoff_with_huge_durations_does_not_panic() {
        let b = Backoff { base: Duration::MAX, max: Duration::MAX, jitter: 1.0 };
        assert!(b.delay(1, 0.999) >= Duration::from_secs(1 << 40));
        assert!(b.delay(40, 0.0) <= Duration::MAX);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(10, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(80));
        assert!(b.delay(1, 0.999) < Duration::from_millis(121));
    }
}
