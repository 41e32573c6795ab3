//! `qwire broker` authentication flags: client certificates required or optional, the
//! SASL users file and the JWKS (both re-read on SIGHUP).

use std::path::PathBuf;

use qwire::broker::{AuthConfig, ClientAuth, CredentialsReloader};

/// Whether TLS demands a client certificate.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ClientAuthArg {
    /// Every client presents a certificate signed by the broker's CA.
    Required,
    /// Clients without a certificate must authenticate with SASL (--users, --jwt-jwks).
    Optional,
}

/// The broker's authentication flags (each overrides `[auth]` of --config).
#[derive(clap::Args)]
pub(crate) struct BrokerAuthArgs {
    /// `required` (default): TLS demands a client certificate. `optional`: a client without
    /// one must authenticate with SASL PLAIN/SCRAM (--users) or a JWT (--jwt-jwks) first.
    #[arg(long, value_enum)]
    client_auth: Option<ClientAuthArg>,
    /// SASL users file written by `qwire users` (salted SCRAM data): enables PLAIN,
    /// SCRAM-SHA-256 and SCRAM-SHA-512. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// JWKS file: enables OAUTHBEARER with RS256, ES256 or EdDSA tokens. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    jwt_jwks: Option<PathBuf>,
    /// The `iss` tokens must carry.
    #[arg(long, value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// A value the tokens' `aud` must contain.
    #[arg(long, value_name = "AUD")]
    jwt_audience: Option<String>,
    /// The claim that names the principal [default: sub].
    #[arg(long, value_name = "CLAIM")]
    jwt_principal_claim: Option<String>,
    /// Longest SASL session before re-authentication, in seconds (tokens end at their
    /// expiry if sooner) [default: PLAIN and SCRAM sessions do not expire].
    #[arg(long, value_name = "SECS")]
    sasl_max_session_secs: Option<u64>,
}

impl BrokerAuthArgs {
    /// Overrides `cfg` with the flags given.
    pub(crate) fn apply(self, cfg: &mut AuthConfig) {
        if let Some(c) = self.client_auth {
            cfg.client_auth = match c {
                ClientAuthArg::Required => ClientAuth::Required,
                ClientAuthArg::Optional => ClientAuth::Optional,
            };
        }
        if self.users.is_some() {
            cfg.users_file = self.users;
        }
        if self.jwt_jwks.is_some() {
            cfg.jwt_jwks = self.jwt_jwks;
        }
        if self.jwt_issuer.is_some() {
            cfg.jwt_issuer = self.jwt_issuer;
        }
        if self.jwt_audience.is_some() {
            cfg.jwt_audience = self.jwt_audience;
        }
        if let Some(c) = self.jwt_principal_claim {
            cfg.jwt_principal_claim = c;
        }
        if self.sasl_max_session_secs.is_some() {
            cfg.max_session_secs = self.sasl_max_session_secs;
        }
    }
}

/// Re-reads the users file and JWKS on every SIGHUP, for the broker's life.
pub(crate) fn reload_on_sighup(credentials: CredentialsReloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: credentials will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // The reloader logs what it loaded, or why it kept the previous credentials.
            let _ = credentials.reload();
        }
    });
}
