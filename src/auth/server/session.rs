//! Each connection's authentication state, and what all connections share.
//!
//! ```text
//!   by certificate ─────────────────────────────► authenticated (for the connection's life)
//!   no certificate ─ SaslStart/SaslContinue ────► authenticated as P, until expiry (or for good)
//!                      │ failure: generic refusal, counted per address; try again
//!   authenticated by SASL ─ SaslStart (same mechanism) ─► same principal P: new expiry
//!                           │ failure or another principal: refused, the old session runs on
//!   expiry without re-authentication ─► the broker closes the connection (SESSION_EXPIRED)
//! ```
//!
//! A connection that presented a certificate is authenticated by it; SASL frames on it
//! are refused with `ILLEGAL_SASL_STATE`: one connection, one principal, fixed by the
//! strongest credential it showed.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use super::credentials::UserStore;
use super::jwt::JwtVerifier;
use super::limiter::{FailureLimiter, LimiterConfig};
use super::scram::{verify_plain, Decoys, ScramServer};
use super::Refusal;
use crate::auth::Mechanism;
use crate::protocol::sasl::{SaslContinue, SaslStart, SaslStep};
use crate::protocol::ErrorCode;

/// The time of an event: monotonic for expiry and rate limits, wall-clock for tokens.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The current time.
    pub fn current() -> Now {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now { instant: Instant::now(), unix_ms }
    }
}

/// Settings of [`AuthService`].
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Failed attempts per source address.
    pub limiter: LimiterConfig,
    /// Longest session before re-authentication is required, for every mechanism (a
    /// token's own expiry is shorter or equal). `None`: PLAIN and SCRAM sessions do not
    /// expire (Kafka's `connections.max.reauth.ms` = 0).
    pub max_session: Option<Duration>,
}

/// What every connection of a broker shares: credentials, JWKS, decoys, the limiter.
/// Credentials and JWKS can be replaced while connections use them (SIGHUP).
#[derive(Debug)]
pub struct AuthService {
    users: ArcSwapOption<UserStore>,
    jwt: ArcSwapOption<JwtVerifier>,
    decoys: Decoys,
    limiter: Mutex<FailureLimiter>,
    settings: AuthSettings,
}

impl AuthService {
    /// A service with PLAIN and SCRAM when `users` is given, OAUTHBEARER when `jwt` is.
    /// `decoy_secret` keys the decoy salts of unknown users; keep it stable across restarts.
    pub fn new(
        users: Option<UserStore>,
        jwt: Option<JwtVerifier>,
        decoy_secret: &[u8],
        settings: AuthSettings,
    ) -> AuthService {
        AuthService {
            users: ArcSwapOption::from_pointee(users),
            jwt: ArcSwapOption::from_pointee(jwt),
            decoys: Decoys::new(decoy_secret),
            limiter: Mutex::new(FailureLimiter::new(settings.limiter)),
            settings,
        }
    }

    /// Replaces the credentials (after the file changed). Exchanges in progress finish
    /// with what they started with; established sessions are not affected.
    pub fn replace_users(&self, users: UserStore) {
        self.users.store(Some(std::sync::Arc::new(users)));
    }

    /// Replaces the JWKS verifier.
    pub fn replace_jwt(&self, jwt: JwtVerifier) {
        self.jwt.store(Some(std::sync::Arc::new(jwt)));
    }

    /// Whether PLAIN and SCRAM are offered (a users file is configured).
    pub fn has_users(&self) -> bool {
        self.users.load().is_some()
    }

    /// Whether OAUTHBEARER is offered (a JWKS is configured).
    pub fn has_jwt(&self) -> bool {
        self.jwt.load().is_some()
    }

    /// The mechanisms offered, in the order of [`Mechanism::ALL`].
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .filter(|m| if *m == Mechanism::OAuthBearer { self.has_jwt() } else { self.has_users() })
            .collect()
    }

    fn try_begin(&self, ip: IpAddr, now: Instant) -> bool {
        self.limiter.lock().expect("limiter lock").try_begin(ip, now)
    }

    fn give_back(&self, ip: IpAddr, now: Instant) {
        self.limiter.lock().expect("limiter lock").give_back(ip, now);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Certificate,
    Sasl { mechanism: Mechanism, expires_at: Option<Instant> },
}

/// One connection's authentication state machine.
#[derive(Debug)]
pub struct ConnectionAuth {
    remote: IpAddr,
    principal: Option<String>,
    method: Option<Method>,
    exchange: Option<ScramServer>,
    /// The attempt in progress took an allowance from the address's failure limiter.
    holds_allowance: bool,
}

impl ConnectionAuth {
    /// A connection authenticated by its client certificate as `principal`.
    pub fn by_certificate(principal: impl Into<String>, remote: IpAddr) -> ConnectionAuth {
        ConnectionAuth {
            remote,
            principal: Some(principal.into()),
            method: Some(Method::Certificate),
            exchange: None,
            holds_allowance: false,
        }
    }

    /// A connection without a certificate: it must authenticate with SASL.
    pub fn unauthenticated(remote: IpAddr) -> ConnectionAuth {
        ConnectionAuth { remote, principal: None, method: None, exchange: None, holds_allowance: false }
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// Whether the connection was authenticated by its certificate.
    pub fn is_certificate(&self) -> bool {
        self.method == Some(Method::Certificate)
    }

    /// The SASL mechanism of the session, if authenticated by SASL.
    pub fn mechanism(&self) -> Option<Mechanism> {
        match self.method {
            Some(Method::Sasl { mechanism, .. }) => Some(mechanism),
            _ => None,
        }
    }

    /// The mechanism of the exchange in progress (a SCRAM exchange awaiting its final
    /// message), if any.
    pub fn exchange_mechanism(&self) -> Option<Mechanism> {
        self.exchange.as_ref().map(|s| s.hash().mechanism())
    }

    /// When the session ends unless re-authenticated (`None`: never).
    pub fn expires_at(&self) -> Option<Instant> {
        match self.method {
            Some(Method::Sasl { expires_at, .. }) => expires_at,
            _ => None,
        }
    }

    /// Whether the session has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|t| now >= t)
    }

    /// Handles `SaslStart`.
    pub fn handle_start(&mut self, svc: &AuthService, start: &SaslStart, now: Now) -> Result<SaslStep, Refusal> {
        if self.is_certificate() {
            return Err(Refusal::other(
                ErrorCode::IllegalSaslState,
                "this connection is authenticated by its client certificate; SASL is for connections without one",
                "SASL on a certificate connection",
            ));
        }
        let offered = svc.mechanisms();
        let Some(mechanism) = Mechanism::from_name(&start.mechanism).filter(|m| offered.contains(m)) else {
            let list = offered.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ");
            let list = if list.is_empty() { "none".to_owned() } else { list };
            return Err(Refusal::other(
                ErrorCode::UnsupportedSaslMechanism,
                format!("SASL mechanism '{}' is not enabled on this broker; enabled: {list}", start.mechanism),
                "SASL mechanism not enabled",
            ));
        };
        self.exchange = None;
        let reauth = self.principal.is_some();
        if reauth && self.is_expired(now.instant) {
            return Err(Refusal::other(
                ErrorCode::SessionExpired,
                "the session expired",
                "re-authentication after expiry",
            ));
        }
        // A first attempt takes an allowance at its start (given back when it succeeds or
        // fails for another reason than its credentials). Re-authentication on a connection
        // that already proved itself is not throttled: a guesser sharing its address must
        // not be able to expire it.
        self.holds_allowance = !reauth;
        if !reauth && !svc.try_begin(self.remote, now.instant) {
            self.holds_allowance = false;
            return Err(Refusal::other(
                ErrorCode::AuthenticationThrottled,
                "too many failed authentication attempts from this address; retry later",
                "throttled",
            ));
        }
        let result = self.start(svc, mechanism, &start.data, now);
        self.settle(svc, result, now)
    }

    /// Handles `SaslContinue`.
    pub fn handle_continue(&mut self, svc: &AuthService, cont: &SaslContinue, now: Now) -> Result<SaslStep, Refusal> {
        let Some(mut server) = self.exchange.take() else {
            return Err(Refusal::other(
                ErrorCode::IllegalSaslState,
                "no SASL exchange in progress on this connection",
                "SaslContinue without an exchange",
            ));
        };
        let mechanism = server.hash().mechanism();
        let result = server
            .handle_client_final(&cont.data)
            .and_then(|(server_final, user)| self.complete(svc, mechanism, user, None, Bytes::from(server_final), now));
        self.settle(svc, result, now)
    }

    fn start(&mut self, svc: &AuthService, mechanism: Mechanism, data: &[u8], now: Now) -> Result<SaslStep, Refusal> {
        if let Some(current) = self.mechanism() {
            if current != mechanism {
                return Err(Refusal::failed("re-authentication with another mechanism"));
            }
        }
        match mechanism {
            Mechanism::Plain => {
                let users = svc.users.load_full().ok_or_else(|| Refusal::failed("no users file"))?;
                let user = verify_plain(data, &users, &svc.decoys)?;
                self.complete(svc, mechanism, user, None, Bytes::new(), now)
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let users = svc.users.load_full().ok_or_else(|| Refusal::failed("no users file"))?;
                let hash = mechanism.scram_hash().expect("a SCRAM mechanism");
                let mut server = ScramServer::new(hash);
                let first = server.handle_client_first(data, &users, &svc.decoys, None)?;
                self.exchange = Some(server);
                Ok(SaslStep::challenge(Bytes::from(first)))
            }
            Mechanism::OAuthBearer => {
                let jwt = svc.jwt.load_full().ok_or_else(|| Refusal::failed("no JWKS"))?;
                let (authzid, token) = parse_oauthbearer(data)?;
                let verified = jwt.verify(token, now.unix_ms)?;
                if authzid.is_some_and(|a| a != verified.principal) {
                    return Err(Refusal::failed(
                        "OAUTHBEARER authorization identity differs from the token's principal",
                    ));
                }
                self.complete(svc, mechanism, verified.principal, Some(verified.lifetime_ms), Bytes::new(), now)
            }
        }
    }

    fn complete(
        &mut self,
        svc: &AuthService,
        mechanism: Mechanism,
        principal: String,
        token_lifetime_ms: Option<u64>,
        data: Bytes,
        now: Now,
    ) -> Result<SaslStep, Refusal> {
        if let Some(current) = &self.principal {
            if *current != principal {
                return Err(Refusal::failed("re-authentication as another principal").for_user(Some(current.clone())));
            }
        }
        let cap = svc.settings.max_session.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let lifetime_ms = match (token_lifetime_ms, cap) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        }
        .map(|ms| ms.max(1));
        let expires_at = lifetime_ms.map(|ms| now.instant + Duration::from_millis(ms));
        self.method = Some(Method::Sasl { mechanism, expires_at });
        self.principal = Some(principal.clone());
        Ok(SaslStep::done(data, principal, lifetime_ms.unwrap_or(0)))
    }

    /// Settles the allowance the attempt took: kept by a credential failure (and while a
    /// SCRAM exchange is still in progress), given back otherwise.
    fn settle(&mut self, svc: &AuthService, r: Result<SaslStep, Refusal>, now: Now) -> Result<SaslStep, Refusal> {
        let give_back = match &r {
            Err(refusal) => {
                self.exchange = None;
                !refusal.is_credential_failure()
            }
            Ok(_) => self.exchange.is_none(),
        };
        if self.exchange.is_none() {
            if give_back && self.holds_allowance {
                svc.give_back(self.remote, now.instant);
            }
            self.holds_allowance = false;
        }
        r
    }
}

/// RFC 7628 §3.1: `gs2-header %x01 *(key=value %x01) %x01`; returns the authzid and the
/// bearer token of the `auth` pair.
fn parse_oauthbearer(data: &[u8]) -> Result<(Option<&str>, &str), Refusal> {
    let malformed = || Refusal::failed("malformed OAUTHBEARER message");
    let text = std::str::from_utf8(data).map_err(|_| malformed())?;
    let (gs2, rest) = text.split_once('\x01').ok_or_else(malformed)?;
    let mut gs2_parts = gs2.split(',');
    let (Some(cb), Some(authz), Some(""), None) =
        (gs2_parts.next(), gs2_parts.next(), gs2_parts.next(), gs2_parts.next())
    else {
        return Err(malformed());
    };
    if cb != "n" && cb != "y" {
        return Err(malformed());
    }
    let authzid = match authz {
        "" => None,
        a => Some(a.strip_prefix("a=").filter(|a| !a.is_empty() && !a.contains('=')).ok_or_else(malformed)?),
    };
    let pairs = rest.strip_suffix("\x01\x01").ok_or_else(malformed)?;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (k, v) = pair.split_once('=').ok_or_else(malformed)?;
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(malformed());
        }
        if k == "auth" {
            let (scheme, t) = v.split_once(' ').ok_or_else(malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") || t.is_empty() || token.is_some() {
                return Err(malformed());
            }
            token = Some(t);
        }
    }
    Ok((authzid, token.ok_or_else(malformed)?))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
