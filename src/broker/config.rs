//! Broker configuration: every setting with its default and why.
//!
//! Loaded from TOML (`qwire broker --config FILE`); command-line flags override it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::auth::AuthConfig;
use super::disk::Syncer;
use super::log::LogConfig;
use super::partition::{PartitionConfig, DEFAULT_PRODUCER_EXPIRATION};
use crate::protocol::MAX_FRAME_SIZE;

/// Default listen address: loopback only, so a dev broker is not exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default largest frame: 8 MiB, room for a 1 MiB batch (Kafka's default max request)
/// many times over while bounding per-stream buffering.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 8 * 1024 * 1024;
/// Bytes of a `FetchOk` frame besides its batches, rounded up: length prefix, kind,
/// correlation id, high watermark and log start offset take 25.
pub const FETCH_OVERHEAD: u32 = 64;
/// Default [`BrokerConfig::max_response_bytes_per_connection`]: 16 MiB, two fetch
/// responses of the largest default size; a consumer that reads what it asked for never
/// waits on it.
pub const DEFAULT_MAX_RESPONSE_BYTES_PER_CONNECTION: u64 = 16 * 1024 * 1024;
/// Default [`BrokerConfig::max_response_bytes`]: 256 MiB, the per-connection budget of
/// 16 connections at once.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// Default [`BrokerConfig::max_buffered_bytes_per_connection`]: 32 MiB, four frames of
/// the largest default size at once; a producer's batches (up to 1 MiB) on all its
/// streams fit many times over.
pub const DEFAULT_MAX_BUFFERED_BYTES_PER_CONNECTION: u64 = 32 * 1024 * 1024;

/// Broker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// UDP address to listen on. Default `127.0.0.1:7878`.
    pub listen: SocketAddr,
    /// Directory for topic logs and broker state. Default `./qwire-data`.
    pub data_dir: PathBuf,
    /// This broker's id, reported in metadata. Default 0.
    pub broker_id: u32,
    /// Host name given to clients in metadata; default the listen IP.
    pub advertised_host: Option<String>,
    /// ACL file; `None` lets every authenticated client do everything.
    pub acl_file: Option<PathBuf>,
    /// Create a topic on first produce or metadata request (with write permission).
    /// Default true, like Kafka's `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic. Default 1 (Kafka's `num.partitions`).
    pub default_partitions: u32,
    /// Most partitions one topic may have. Default 1024.
    pub max_partitions: u32,
    /// Most topics the broker holds. Creating one more (explicitly or by auto-create) is
    /// refused with `TOPIC_LIMIT_REACHED` (not retriable). Each topic costs files and a
    /// task per partition, so one authorised client must not create them without bound.
    /// Topics already on disk at start-up are all opened, even beyond it. Default 10 000.
    pub max_topics: u32,
    /// Most topics one `Metadata` request may auto-create; the further missing topics it
    /// names are answered `RESOURCE_LIMIT` (retriable: the next request creates the next
    /// ones). Default 100.
    pub max_auto_create_per_request: u32,
    /// Largest frame accepted (length prefix value). Default 8 MiB, at most 16 MiB.
    pub max_frame_size: u32,
    /// Largest record batch a produce may carry; larger ones are answered
    /// `BATCH_TOO_LARGE`. It is also the largest fetch response, so every stored batch can
    /// be fetched. 0 (the default) means `max_frame_size` − [`FETCH_OVERHEAD`]; a value set
    /// must lie between 1024 and that.
    pub max_batch_bytes: u32,
    /// Most concurrent connections; further ones are refused. Default 1024.
    pub max_connections: u32,
    /// Most TLS handshakes in progress at once; each also holds a connection slot. A
    /// further connection is refused (QUIC `CONNECTION_REFUSED`), and once half of them are
    /// in progress, a peer whose address is not yet validated is first sent a QUIC Retry
    /// (one extra round trip; the broker keeps no state until the peer answers it). Peers
    /// that start handshakes and never finish them therefore hold at most this many slots,
    /// for at most `handshake_timeout_ms`. Default 128.
    pub max_handshakes: u32,
    /// A handshake not completed within this many ms is dropped and its slot freed.
    /// Default 5000 (a full mTLS handshake takes about 1 ms on loopback; this leaves room
    /// for slow, lossy paths).
    pub handshake_timeout_ms: u64,
    /// Most concurrent bidirectional streams per connection. Default 256.
    pub max_streams_per_connection: u32,
    /// Bytes of large frames (over 64 KiB) one connection may have at the broker at once,
    /// partly received or received and waiting for their request to finish (a produce
    /// until its batch is appended), summed over its streams. A frame that would exceed it is answered
    /// `RESOURCE_LIMIT` (retriable) and its body is discarded as it arrives, so a client
    /// that starts many huge frames and never finishes them cannot grow the broker's
    /// memory by `max_streams_per_connection` × `max_frame_size`. Default 32 MiB;
    /// values below `max_frame_size` let only one large frame in at a time.
    pub max_buffered_bytes_per_connection: u64,
    /// Bytes of responses (fetched batches, metadata listings) one connection may have
    /// waiting to be sent, summed over its streams. A fetch is charged before the broker
    /// reads the log and released once its bytes are handed to QUIC; a fetch that does not
    /// fit waits, and so does the rest of its stream, so a client that never reads its
    /// responses holds at most this much. A single response larger than the budget takes
    /// the whole budget. Default 16 MiB.
    pub max_response_bytes_per_connection: u64,
    /// Bytes of responses waiting to be sent over all connections: the broker-wide bound
    /// behind [`Self::max_response_bytes_per_connection`]. A connection takes its own
    /// budget first, so it waits on this one only when many connections hold responses
    /// their clients do not read. Default 256 MiB.
    pub max_response_bytes: u64,
    /// Seconds a stream's client may take none of the response bytes the broker has for it
    /// before the broker resets the stream (QUIC `RESET_STREAM`, application code 2) and
    /// drops its queued responses, giving their budget back: without it, clients that
    /// keep their connection alive but never read would hold the broker-wide budget for
    /// ever. The client's connection and other streams are untouched. 0 never resets.
    /// Default 30 (the default request timeout).
    pub response_stall_timeout_secs: u64,
    /// Most producer ids one principal holds at once. Issuing one more forgets the
    /// principal's least recently used id (its producer then gets `INVALID_PRODUCER_ID`
    /// and asks for a new id), so one client cannot grow the broker's id table without
    /// bound. Default 10 000.
    pub max_producer_ids_per_principal: usize,
    /// Idle timeout for connections, in seconds. Default 30.
    pub idle_timeout_secs: u64,
    /// How long an acks=all produce may wait for its fsync when the request carries no
    /// timeout, in ms. Default 30000 (Kafka's request timeout).
    pub default_produce_timeout_ms: u32,
    /// Roll a segment when it would exceed this many bytes. Default 256 MiB.
    pub segment_bytes: u64,
    /// Sparse index interval in bytes. Default 4096.
    pub index_interval_bytes: u32,
    /// Delete oldest segments while a partition exceeds this size; `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this many seconds; `None`
    /// keeps all.
    pub retention_secs: Option<u64>,
    /// How often retention runs, in seconds. Default 60.
    pub retention_check_secs: u64,
    /// Grace period for in-flight requests at shutdown, in ms. Default 5000.
    pub shutdown_grace_ms: u64,
    /// Forget an idempotent producer's dedup state on a partition after this many ms
    /// without an append there (Kafka's `producer.id.expiration.ms`). Default 86 400 000
    /// (1 day): a retry never comes that late, and a broker serving many short-lived
    /// producers does not keep their state forever. A producer that comes back after it
    /// starts afresh at sequence 0 (another sequence is `UNKNOWN_PRODUCER_ID`).
    pub producer_id_expiration_ms: u64,
    /// Benchmark mode: do every protocol step (decode, CRC, dedup, ack) but skip the disk
    /// append. Acks are then not durable: never for real data. Default false.
    pub sink: bool,
    /// Cluster mode (`qwire broker --metadata etcd://...`): this broker's cluster settings.
    /// `None` (the default) runs a single broker. Not read from the TOML file.
    #[serde(skip)]
    pub cluster: Option<crate::cluster::config::ClusterConfig>,
    /// Authentication beyond client certificates (`[auth]`): certificates required or
    /// optional, SASL users, JWT bearer tokens. Default: certificates required, no SASL.
    pub auth: AuthConfig,
    /// How storage makes data durable: the OS's fsync by default. Not read from TOML; a
    /// test or an embedding program sets a [`Syncer::with_hook`] to delay or fail fsyncs
    /// (fault injection).
    #[serde(skip)]
    pub syncer: Syncer,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: PathBuf::from("qwire-data"),
            broker_id: 0,
            advertised_host: None,
            acl_file: None,
            auto_create_topics: true,
            default_partitions: 1,
            max_partitions: 1024,
            max_topics: 10_000,
            max_auto_create_per_request: 100,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_batch_bytes: 0,
            max_connections: 1024,
            max_handshakes: 128,
            handshake_timeout_ms: 5000,
            max_streams_per_connection: 256,
            max_buffered_bytes_per_connection: DEFAULT_MAX_BUFFERED_BYTES_PER_CONNECTION,
            max_response_bytes_per_connection: DEFAULT_MAX_RESPONSE_BYTES_PER_CONNECTION,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            response_stall_timeout_secs: 30,
            max_producer_ids_per_principal: super::producer_ids::DEFAULT_MAX_PER_PRINCIPAL,
            idle_timeout_secs: 30,
            default_produce_timeout_ms: 30_000,
            segment_bytes: 256 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_secs: None,
            retention_check_secs: 60,
            shutdown_grace_ms: 5000,
            producer_id_expiration_ms: DEFAULT_PRODUCER_EXPIRATION.as_millis() as u64,
            sink: false,
            cluster: None,
            auth: AuthConfig::default(),
            syncer: Syncer::os(),
        }
    }
}

impl BrokerConfig {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<BrokerConfig, String> {
        let cfg: BrokerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges; returns a message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_frame_size as usize > MAX_FRAME_SIZE || self.max_frame_size < 1024 {
            return Err(format!(
                "max_frame_size must be between 1024 and {MAX_FRAME_SIZE}, got {}",
                self.max_frame_size
            ));
        }
        let largest = self.max_frame_size - FETCH_OVERHEAD;
        if self.max_batch_bytes != 0 && !(1024..=largest).contains(&self.max_batch_bytes) {
            return Err(format!(
                "max_batch_bytes must be 0 (max_frame_size - {FETCH_OVERHEAD}) or between 1024 and {largest}, got {}",
                self.max_batch_bytes
            ));
        }
        if self.default_partitions == 0 || self.default_partitions > self.max_partitions {
            return Err(format!(
                "default_partitions must be between 1 and max_partitions ({}), got {}",
                self.max_partitions, self.default_partitions
            ));
        }
        if self.max_connections == 0 || self.max_streams_per_connection == 0 || self.max_handshakes == 0 {
            return Err("max_connections, max_handshakes and max_streams_per_connection must be at least 1".into());
        }
        if self.handshake_timeout_ms == 0 {
            return Err("handshake_timeout_ms must be at least 1".into());
        }
        if self.max_response_bytes_per_connection == 0 || self.max_response_bytes == 0 {
            return Err("max_response_bytes_per_connection and max_response_bytes must be at least 1".into());
        }
        if self.producer_id_expiration_ms == 0 {
            return Err("producer_id_expiration_ms must be at least 1".into());
        }
        if self.segment_bytes < 4096 {
            return Err(format!("segment_bytes must be at least 4096, got {}", self.segment_bytes));
        }
        self.auth.validate().map_err(|e| format!("auth: {e}"))
    }

    /// The partition settings derived from this config.
    pub fn partition_config(&self) -> PartitionConfig {
        PartitionConfig {
            log: self.log_config(),
            producer_expiration: Duration::from_millis(self.producer_id_expiration_ms),
            syncer: self.syncer.clone(),
            ..PartitionConfig::default()
        }
    }

    /// The largest batch a produce may carry, and the largest fetch response
    /// ([`Self::max_batch_bytes`] with 0 resolved).
    pub fn batch_limit(&self) -> u32 {
        match self.max_batch_bytes {
            0 => self.max_frame_size - FETCH_OVERHEAD,
            n => n,
        }
    }

    /// The log settings derived from this config.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            index_interval_bytes: self.index_interval_bytes,
            retention_bytes: self.retention_bytes,
            retention: self.retention_secs.map(Duration::from_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = BrokerConfig::from_toml("listen = \"127.0.0.1:9000\"\ndefault_partitions = 4\n").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.default_partitions, 4);
        assert!(c.auto_create_topics);
        assert!(BrokerConfig::from_toml("lisen = \"x\"").is_err());
        assert!(BrokerConfig::from_toml("max_frame_size = 100").unwrap_err().contains("max_frame_size"));
        let c = BrokerConfig::from_toml("[auth]\nclient_auth = \"optional\"\nusers_file = \"u.toml\"\n").unwrap();
        assert_eq!(c.auth.client_auth, super::super::auth::ClientAuth::Optional);
        assert!(BrokerConfig::from_toml("[auth]\nclient_auth = \"optional\"\n").unwrap_err().contains("auth: "));
        assert!(BrokerConfig::from_toml("[auth]\nclient_auth = \"sometimes\"\n").is_err());
    }
}
