//! rustls and quinn configuration: TLS 1.3 only, ALPN `qwire/1`, client certificates
//! required by the broker, and the crypto provider always passed explicitly.
//!
//! quinn pulls in `ring`; rustls' default `aws-lc-rs` feature is off in Cargo.toml, and
//! every builder is given [`crypto_provider`] so no process-wide default is consulted.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use super::certs::Identity;
use crate::protocol::ALPN;

/// Errors while building TLS configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the configuration (bad key, no usable cipher suite...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA certificate could not be added to the trust store.
    #[error("CA certificate rejected: {0}")]
    BadCa(String),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// quinn refused the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The rustls provider qwire uses: ring, TLS 1.3 suites only, AES-GCM first (AES-GCM is
/// ~35 % faster than ChaCha20 on x86 with AES-NI; `TLS13_AES_128_GCM_SHA256` must stay
/// enabled because QUIC's initial packets use it).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in ca {
        store.add(c.clone()).map_err(|e| TlsError::BadCa(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// Server-side rustls config: presents `identity`, requires a client certificate that
/// chains to `client_ca`.
pub fn server_tls(
    identity: &Identity,
    client_ca: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig, TlsError> {
    server_tls_with_client_auth(identity, client_ca, true)
}

/// Server-side rustls config: presents `identity` and verifies a client certificate against
/// `client_ca`. With `require_client_cert` false a client may also come without one (the
/// broker's client auth `optional`: such a client must then authenticate with SASL); a
/// certificate that is presented must still verify.
pub fn server_tls_with_client_auth(
    identity: &Identity,
    client_ca: &[CertificateDer<'static>],
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider.clone());
    if !require_client_cert {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Client-side rustls config: trusts `server_ca`, presents `identity` when given
/// (`None` is only useful to test that a broker refuses it).
pub fn client_tls(
    identity: Option<&Identity>,
    server_ca: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(server_ca)?);
    let mut cfg = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// QUIC transport tuning shared by both sides.
#[derive(Debug, Clone)]
pub struct QuicTuning {
    /// Idle timeout: a connection with no traffic (keep-alives count) for this long is
    /// closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Keep-alive interval; `None` disables. Default 5 s on clients, off on the broker.
    pub keep_alive: Option<Duration>,
    /// Per-stream receive window in bytes. Default 8 MiB: one partition's stream must be
    /// able to hold several in-flight batches of up to 1 MiB.
    pub stream_window: u32,
    /// Connection receive window in bytes. Default 32 MiB.
    pub conn_window: u32,
    /// Bidirectional streams the peer may open concurrently. Default 256.
    pub max_bidi_streams: u32,
    /// Upper bound for path MTU discovery (UDP payload). Default 1452 (what a 1500-byte
    /// Ethernet path allows); loopback can go higher, see PERF.md.
    pub mtu_upper_bound: u16,
}

impl Default for QuicTuning {
    fn default() -> Self {
        QuicTuning {
            idle_timeout: Duration::from_secs(30),
            keep_alive: None,
            stream_window: 8 << 20,
            conn_window: 32 << 20,
            max_bidi_streams: 256,
            mtu_upper_bound: 1452,
        }
    }
}

impl QuicTuning {
    /// The quinn transport config for these settings.
    pub fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.keep_alive_interval(self.keep_alive);
        t.stream_receive_window(self.stream_window.into());
        t.receive_window(self.conn_window.into());
        t.send_window(u64::from(self.conn_window));
        t.max_concurrent_bidi_streams(self.max_bidi_streams.into());
        t.max_concurrent_uni_streams(0u8.into());
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound);
        t.mtu_discovery_config(Some(mtu));
        t
    }
}

/// A quinn server config from a rustls server config.
pub fn quinn_server_config(tls: rustls::ServerConfig, tuning: &QuicTuning) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.transport_config()));
    Ok(cfg)
}

/// A quinn client config from a rustls client config.
pub fn quinn_client_config(tls: rustls::ClientConfig, tuning: &QuicTuning) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.transport_config()));
    Ok(cfg)
}

/// The TLS alert name for a QUIC crypto error code (0x100 + alert).
pub fn tls_alert_name(alert: u8) -> &'static str {
    match alert {
        10 => "unexpected_message",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        80 => "internal_error",
        109 => "missing_extension",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => "unknown alert",
    }
}
