//! The broker's authentication settings and what it does with them: client certificates
//! required or optional, the SASL users file and JWKS (read at start and again on
//! SIGHUP), and each certificate-less connection's deadline and session expiry.
//!
//! The mechanisms themselves are in [`crate::auth::server`]; the SASL requests in
//! `requests/sasl.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::admission::{PendingAuth, PendingPermit};
use super::metrics::{inc, BrokerMetrics};
use crate::auth::server::credentials::UserStore;
use crate::auth::server::jwt::{JwtPolicy, JwtVerifier, DEFAULT_CLOCK_SKEW};
use crate::auth::server::limiter::{LimiterConfig, DEFAULT_BURST, DEFAULT_MAX_TRACKED, DEFAULT_REFILL};
use crate::auth::server::session::{AuthService, AuthSettings};
use crate::protocol::ErrorCode;

/// Whether TLS demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every client presents a certificate signed by the broker's CA (the default).
    #[default]
    Required,
    /// A client may come without a certificate; it must then authenticate with SASL
    /// (PLAIN, SCRAM, OAUTHBEARER) before anything else. A certificate presented is still
    /// verified and, when accepted, authenticates the connection.
    Optional,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<ClientAuth, String> {
        match s {
            "required" => Ok(ClientAuth::Required),
            "optional" => Ok(ClientAuth::Optional),
            _ => Err(format!("client auth must be 'required' or 'optional', got '{s}'")),
        }
    }
}

/// Default [`AuthConfig::auth_timeout_ms`]: a certificate-less connection has 10 s to
/// authenticate.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Authentication settings (`[auth]` in the broker's TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `required` (default) or `optional`.
    pub client_auth: ClientAuth,
    /// SASL users file (salted SCRAM data, written by `qwire users`): enables PLAIN,
    /// SCRAM-SHA-256 and SCRAM-SHA-512. Re-read on SIGHUP.
    pub users_file: Option<PathBuf>,
    /// JWKS file: enables OAUTHBEARER (JWT bearer tokens). Re-read on SIGHUP.
    pub jwt_jwks: Option<PathBuf>,
    /// Required `iss` of tokens (required with `jwt_jwks`).
    pub jwt_issuer: Option<String>,
    /// Required member of the tokens' `aud` (required with `jwt_jwks`).
    pub jwt_audience: Option<String>,
    /// Claim holding the principal. Default `sub`.
    pub jwt_principal_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    pub jwt_clock_skew_secs: u64,
    /// Longest SASL session before the client must re-authenticate, in seconds (tokens
    /// end at their expiry if sooner). `None` (default): PLAIN and SCRAM sessions do not
    /// expire.
    pub max_session_secs: Option<u64>,
    /// A connection without a certificate that has not authenticated after this many ms is
    /// closed (application code 52). Default 10 000.
    pub auth_timeout_ms: u64,
    /// Most connections without a certificate that have not authenticated yet, at once;
    /// more are closed with code 54 (`AUTHENTICATION_THROTTLED`). Default 256.
    pub max_unauthenticated: u32,
    /// Most such connections from one source address (IPv6: one /64). Default 32.
    pub max_unauthenticated_per_source: u32,
    /// Failed authentications allowed in a row per source address before its attempts
    /// are refused `AUTHENTICATION_THROTTLED`. Default 10.
    pub failure_burst: u32,
    /// One more failure is allowed per this many ms. Default 1000.
    pub failure_refill_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            client_auth: ClientAuth::Required,
            users_file: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_principal_claim: "sub".into(),
            jwt_clock_skew_secs: DEFAULT_CLOCK_SKEW.as_secs(),
            max_session_secs: None,
            auth_timeout_ms: DEFAULT_AUTH_TIMEOUT.as_millis() as u64,
            max_unauthenticated: 256,
            max_unauthenticated_per_source: 32,
            failure_burst: DEFAULT_BURST,
            failure_refill_ms: DEFAULT_REFILL.as_millis() as u64,
        }
    }
}

impl AuthConfig {
    /// Checks that the settings fit together; names the one that does not.
    pub fn validate(&self) -> Result<(), String> {
        let sasl = self.users_file.is_some() || self.jwt_jwks.is_some();
        match self.client_auth {
            ClientAuth::Optional if !sasl => {
                return Err("client auth 'optional' needs a users file or a JWKS: a client without a certificate \
                            would have no way to authenticate"
                    .into())
            }
            ClientAuth::Required if sasl => {
                return Err("a users file or a JWKS needs client auth 'optional': with 'required' every client \
                            presents a certificate and SASL is never used"
                    .into())
            }
            _ => {}
        }
        match (&self.jwt_jwks, &self.jwt_issuer, &self.jwt_audience) {
            (Some(_), Some(i), Some(a)) if !i.is_empty() && !a.is_empty() => {}
            (Some(_), _, _) => return Err("a JWKS needs a JWT issuer and a JWT audience".into()),
            (None, None, None) => {}
            (None, _, _) => return Err("a JWT issuer or audience without a JWKS".into()),
        }
        if self.jwt_principal_claim.is_empty() {
            return Err("the JWT principal claim must not be empty".into());
        }
        if self.auth_timeout_ms == 0
            || self.failure_burst == 0
            || self.failure_refill_ms == 0
            || self.max_unauthenticated == 0
            || self.max_unauthenticated_per_source == 0
        {
            return Err("auth_timeout_ms, failure_burst, failure_refill_ms, max_unauthenticated and \
                 max_unauthenticated_per_source must be at least 1"
                .into());
        }
        if self.max_session_secs == Some(0) {
            return Err("max_session_secs must be at least 1 (leave it out for sessions that do not expire)".into());
        }
        Ok(())
    }

    fn settings(&self) -> AuthSettings {
        AuthSettings {
            limiter: LimiterConfig {
                burst: self.failure_burst,
                refill_every: Duration::from_millis(self.failure_refill_ms),
                max_tracked: DEFAULT_MAX_TRACKED,
            },
            max_session: self.max_session_secs.map(Duration::from_secs),
        }
    }

    fn load_users(&self) -> Result<Option<UserStore>, String> {
        self.users_file.as_deref().map(UserStore::load).transpose()
    }

    fn load_jwt(&self) -> Result<Option<JwtVerifier>, String> {
        let Some(path) = &self.jwt_jwks else { return Ok(None) };
        let policy = JwtPolicy {
            issuer: self.jwt_issuer.clone().unwrap_or_default(),
            audience: self.jwt_audience.clone().unwrap_or_default(),
            principal_claim: self.jwt_principal_claim.clone(),
            clock_skew: Duration::from_secs(self.jwt_clock_skew_secs),
        };
        let v = JwtVerifier::load(path, policy)?;
        for s in v.skipped() {
            tracing::warn!(jwks = %path.display(), "{s}: key left out");
        }
        Ok(Some(v))
    }
}

/// The broker's authentication: its settings and the service every connection uses.
#[derive(Debug)]
pub(crate) struct BrokerAuth {
    pub(crate) config: AuthConfig,
    pub(crate) service: Arc<AuthService>,
    /// Places for connections that have not authenticated yet.
    pub(crate) pending: PendingAuth,
}

impl BrokerAuth {
    /// Reads the users file and JWKS. `decoy_secret` must be stable across restarts.
    pub(crate) fn load(config: AuthConfig, decoy_secret: &[u8]) -> Result<BrokerAuth, String> {
        config.validate()?;
        let users = config.load_users()?;
        let jwt = config.load_jwt()?;
        let service = Arc::new(AuthService::new(users, jwt, decoy_secret, config.settings()));
        let mechanisms: Vec<&str> = service.mechanisms().iter().map(|m| m.name()).collect();
        if config.client_auth == ClientAuth::Optional {
            tracing::info!(mechanisms = %mechanisms.join(","), "client certificates optional; SASL for the others");
        }
        let pending = PendingAuth::new(config.max_unauthenticated, config.max_unauthenticated_per_source);
        Ok(BrokerAuth { config, service, pending })
    }

    /// Reads the users file and JWKS again. On error nothing changes.
    pub(crate) fn reload(&self) -> Result<String, String> {
        let users = self.config.load_users()?;
        let jwt = self.config.load_jwt()?;
        let mut said = Vec::new();
        if let Some(u) = users {
            said.push(format!("{} users", u.len()));
            self.service.replace_users(u);
        }
        if let Some(j) = jwt {
            said.push(format!("{} JWKS keys", j.key_count()));
            self.service.replace_jwt(j);
        }
        Ok(if said.is_empty() { "no SASL credentials configured".into() } else { said.join(", ") })
    }
}

/// Where a certificate-less connection's authentication stands, for its watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// Not authenticated yet.
    Pending,
    /// Authenticated until this instant (`None`: for good).
    Until(Option<Instant>),
}

/// Closes a certificate-less connection that does not authenticate within `deadline`
/// (application code 52), or whose session ends without a re-authentication (code 55).
pub(crate) async fn watch_session(
    conn: quinn::Connection,
    mut state: watch::Receiver<SessionState>,
    deadline: Duration,
    metrics: Arc<BrokerMetrics>,
    remote: SocketAddr,
    pending: PendingPermit,
) {
    let deadline = Instant::now() + deadline;
    let mut pending = Some(pending);
    loop {
        let current = *state.borrow_and_update();
        if matches!(current, SessionState::Until(_)) {
            // Authenticated: its place in the unauthenticated budget is free again.
            drop(pending.take());
        }
        let until = match current {
            SessionState::Pending => Some(deadline),
            SessionState::Until(t) => t,
        };
        let sleep = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                if *state.borrow() != current {
                    continue;
                }
                let (code, reason) = match current {
                    SessionState::Pending => {
                        inc(&metrics.sasl_deadline_closes);
                        tracing::warn!(%remote, "connection did not authenticate in time: closing");
                        (ErrorCode::AuthenticationRequired, "authentication required".as_bytes())
                    }
                    SessionState::Until(_) => {
                        inc(&metrics.sasl_sessions_expired);
                        tracing::info!(%remote, "SASL session expired without re-authentication: closing");
                        (ErrorCode::SessionExpired, "authentication session expired".as_bytes())
                    }
                };
                conn.close(u32::from(code.as_u16()).into(), reason);
                return;
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = conn.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_must_fit_together() {
        let users = Some(PathBuf::from("users.toml"));
        let ok = |c: AuthConfig| c.validate().unwrap();
        let bad = |c: AuthConfig, says: &str| {
            let e = c.validate().unwrap_err();
            assert!(e.contains(says), "{e} should say {says}");
        };
        ok(AuthConfig::default());
        ok(AuthConfig { client_auth: ClientAuth::Optional, users_file: users.clone(), ..Default::default() });
        bad(AuthConfig { client_auth: ClientAuth::Optional, ..Default::default() }, "needs a users file or a JWKS");
        bad(AuthConfig { users_file: users.clone(), ..Default::default() }, "needs client auth 'optional'");
        let jwt = AuthConfig {
            client_auth: ClientAuth::Optional,
            jwt_jwks: Some("jwks.json".into()),
            jwt_issuer: Some("iss".into()),
            jwt_audience: Some("aud".into()),
            ..Default::default()
        };
        ok(jwt.clone());
        bad(AuthConfig { jwt_audience: None, ..jwt.clone() }, "needs a JWT issuer and a JWT audience");
        bad(AuthConfig { jwt_jwks: None, users_file: users.clone(), ..jwt.clone() }, "without a JWKS");
        bad(AuthConfig { jwt_principal_claim: String::new(), ..jwt.clone() }, "principal claim");
        bad(AuthConfig { failure_burst: 0, ..jwt.clone() }, "failure_burst");
        bad(AuthConfig { max_session_secs: Some(0), ..jwt }, "max_session_secs");
        assert_eq!("optional".parse::<ClientAuth>(), Ok(ClientAuth::Optional));
        assert!("maybe".parse::<ClientAuth>().is_err());
    }
}
