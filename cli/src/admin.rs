//! `qwire broker --http ADDR`: starts the broker's admin HTTP listener before the broker,
//! so `/ready` answers 503 while the data directory is recovered.

use std::net::SocketAddr;

use qwire::broker::admin::{Admin, AdminConfig, AdminHandle, AdminTls};
use qwire::broker::BrokerTls;

use crate::Failure;

/// The admin listener flags of `qwire broker`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AdminArgs {
    /// Serve /health, /ready, /metrics and the schema registry's Confluent-compatible REST
    /// API (/subjects, /schemas/ids/{id}, /config, /compatibility/...) over HTTPS on this
    /// TCP address; clients must present a certificate signed by the broker's CA (as for
    /// QUIC). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<SocketAddr>,
    /// With --http: plain HTTP without authentication, for development. Refused unless
    /// the address is loopback (127.0.0.0/8 or ::1).
    #[arg(long, requires = "http")]
    pub(crate) http_plaintext: bool,
}

/// Starts the listener when `--http` was given.
pub(crate) async fn start(args: &AdminArgs, tls: &BrokerTls) -> Result<Option<AdminHandle>, Failure> {
    let Some(addr) = args.http else { return Ok(None) };
    let mode = if args.http_plaintext { AdminTls::Plaintext } else { AdminTls::Mtls(tls.clone()) };
    let handle = Admin::new(AdminConfig::new(addr, mode))
        .start()
        .await
        .map_err(|e| Failure::new(crate::clients::EXIT_INVALID, format!("--http: {e}")))?;
    let scheme = if args.http_plaintext { "http" } else { "https" };
    println!(
        "qwire admin listening on {scheme}://{} (/health, /ready, /metrics, schema registry REST)",
        handle.local_addr()
    );
    Ok(Some(handle))
}
