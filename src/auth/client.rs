//! The client side of a SASL exchange, for any mechanism, sans-IO.
//!
//! ```text
//! let mut exchange = credentials.begin().await?;       // fetches a token if needed
//! send SaslStart(exchange.start())
//! loop on each SaslStartOk / SaslContinueOk `step`:
//!     match exchange.step(&step)? {
//!         Next::Continue(c) => send SaslContinue(c),
//!         Next::Done(session) => break,                 // session.principal, .lifetime
//!     }
//! ```
//!
//! A session with a lifetime must re-authenticate (a new exchange on the same
//! connection) before it ends: [`reauthenticate_after`] says when.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::scram::{validate_username, ScramClient, ScramError, ScramHash};
use super::token::{TokenError, TokenProvider};
use super::{Mechanism, Secret};
use crate::protocol::sasl::{SaslContinue, SaslStart, SaslStep, MAX_SASL_DATA};

/// Credentials a client authenticates with when it has no client certificate.
#[derive(Debug, Clone)]
pub enum SaslCredentials {
    /// SASL PLAIN: the password is sent (inside TLS) and checked by the broker.
    Plain {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// SCRAM-SHA-256 or SCRAM-SHA-512: the password never leaves the client.
    Scram {
        /// The hash.
        hash: ScramHash,
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// OAUTHBEARER: a JWT from a provider, asked again at every (re-)authentication.
    Token(Arc<dyn TokenProvider>),
}

/// Why a client-side exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// The credentials cannot be used (bad user name, empty password or token).
    #[error("invalid credentials: {0}")]
    InvalidCredentials(String),
    /// The token provider failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The SCRAM exchange failed on the client's side (the broker's messages were wrong).
    #[error(transparent)]
    Scram(#[from] ScramError),
    /// The broker requires SASL from this client (it presented no certificate), and no
    /// SASL credentials are configured.
    #[error("the broker requires a client certificate or SASL credentials, and neither is configured")]
    Required,
    /// The broker's answer does not fit the exchange (e.g. more steps than the mechanism has).
    #[error("unexpected SASL answer from the broker: {0}")]
    Unexpected(&'static str),
}

impl SaslCredentials {
    /// PLAIN credentials.
    pub fn plain(username: impl Into<String>, password: impl Into<Secret>) -> SaslCredentials {
        SaslCredentials::Plain { username: username.into(), password: password.into() }
    }

    /// SCRAM credentials with the given hash.
    pub fn scram(hash: ScramHash, username: impl Into<String>, password: impl Into<Secret>) -> SaslCredentials {
        SaslCredentials::Scram { hash, username: username.into(), password: password.into() }
    }

    /// OAUTHBEARER with a token provider.
    pub fn token(provider: Arc<dyn TokenProvider>) -> SaslCredentials {
        SaslCredentials::Token(provider)
    }

    /// The mechanism these credentials use.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            SaslCredentials::Plain { .. } => Mechanism::Plain,
            SaslCredentials::Scram { hash, .. } => hash.mechanism(),
            SaslCredentials::Token(_) => Mechanism::OAuthBearer,
        }
    }

    /// Checks what can be checked before connecting (user name, non-empty password).
    pub fn validate(&self) -> Result<(), SaslError> {
        let check = |username: &str, password: &Secret| {
            validate_username(username).map_err(|e| SaslError::InvalidCredentials(e.to_string()))?;
            if password.is_empty() {
                return Err(SaslError::InvalidCredentials("empty password".into()));
            }
            Ok(())
        };
        match self {
            SaslCredentials::Plain { username, password } | SaslCredentials::Scram { username, password, .. } => {
                check(username, password)
            }
            SaslCredentials::Token(_) => Ok(()),
        }
    }

    /// Starts an exchange: for tokens, asks the provider for a fresh one.
    pub async fn begin(&self) -> Result<SaslClient, SaslError> {
        self.validate()?;
        let state = match self {
            SaslCredentials::Plain { username, password } => {
                let mut msg = Vec::with_capacity(2 + username.len() + password.expose().len());
                msg.push(0);
                msg.extend_from_slice(username.as_bytes());
                msg.push(0);
                msg.extend_from_slice(password.expose().as_bytes());
                State::OneShot { msg: Some(Secret::new(String::from_utf8(msg).expect("UTF-8 parts"))), sent: false }
            }
            SaslCredentials::Scram { hash, username, password } => {
                State::Scram(ScramClient::new(*hash, username, password.expose())?, ScramStep::First)
            }
            SaslCredentials::Token(provider) => {
                let token = provider.token().await?;
                State::OneShot { msg: Some(oauthbearer_initial_response(token.expose())?), sent: false }
            }
        };
        Ok(SaslClient { mechanism: self.mechanism(), state })
    }
}

/// RFC 7628 §3.1 client initial response: `n,,\x01auth=Bearer <token>\x01\x01`.
pub fn oauthbearer_initial_response(token: &str) -> Result<Secret, SaslError> {
    // RFC 6750 b64token: the characters a JWT is made of.
    let valid = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'='));
    if !valid {
        return Err(SaslError::InvalidCredentials(
            "the bearer token is empty or has characters a JWT cannot hold".into(),
        ));
    }
    let msg = format!("n,,\x01auth=Bearer {token}\x01\x01");
    if msg.len() > MAX_SASL_DATA {
        return Err(SaslError::InvalidCredentials(format!("the bearer token is longer than {MAX_SASL_DATA} bytes")));
    }
    Ok(Secret::new(msg))
}

enum ScramStep {
    /// `start` not called yet.
    First,
    /// client-first sent; the server-first is due.
    AwaitServerFirst,
    /// client-final sent; the server-final is due.
    AwaitServerFinal,
    /// Over (success or failure).
    Done,
}

enum State {
    /// PLAIN and OAUTHBEARER: one client message, then the broker's verdict. The message
    /// is dropped (wiped) once the verdict came; `sent` once `start` handed it out.
    OneShot {
        msg: Option<Secret>,
        sent: bool,
    },
    Scram(ScramClient, ScramStep),
}

/// What to do after a broker step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this `SaslContinue`.
    Continue(SaslContinue),
    /// Authenticated.
    Done(Session),
}

/// An authenticated SASL session, as the broker described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The principal the broker authenticated.
    pub principal: String,
    /// How long until the broker closes the connection unless it re-authenticates;
    /// `None` when the session does not expire.
    pub lifetime: Option<Duration>,
}

/// One client-side exchange (started by [`SaslCredentials::begin`]).
pub struct SaslClient {
    mechanism: Mechanism,
    state: State,
}

impl std::fmt::Debug for SaslClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslClient").field("mechanism", &self.mechanism).finish_non_exhaustive()
    }
}

impl SaslClient {
    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The `SaslStart` that opens the exchange. Holds the secret for PLAIN and
    /// OAUTHBEARER: send it, never log it.
    pub fn start(&mut self) -> SaslStart {
        let data = match &mut self.state {
            State::OneShot { msg, sent } => {
                *sent = true;
                Bytes::copy_from_slice(msg.as_ref().map_or("", |m| m.expose()).as_bytes())
            }
            State::Scram(c, step) => {
                *step = ScramStep::AwaitServerFirst;
                Bytes::from(c.client_first())
            }
        };
        SaslStart { mechanism: self.mechanism.name().to_owned(), data }
    }

    /// Handles the broker's `SaslStartOk` / `SaslContinueOk`.
    pub fn step(&mut self, step: &SaslStep) -> Result<Next, SaslError> {
        let done = |step: &SaslStep| {
            if step.principal.is_empty() {
                return Err(SaslError::Unexpected("authenticated without a principal"));
            }
            Ok(Next::Done(Session {
                principal: step.principal.clone(),
                lifetime: (step.session_lifetime_ms > 0).then(|| Duration::from_millis(step.session_lifetime_ms)),
            }))
        };
        match &mut self.state {
            State::OneShot { msg, sent } => {
                if !*sent || msg.take().is_none() {
                    return Err(SaslError::Unexpected("a step after the exchange ended"));
                }
                if !step.complete {
                    return Err(SaslError::Unexpected("a challenge for a one-message mechanism"));
                }
                done(step)
            }
            State::Scram(client, s) => match std::mem::replace(s, ScramStep::Done) {
                ScramStep::AwaitServerFirst if !step.complete => {
                    let msg = client.handle_server_first(&step.data)?;
                    *s = ScramStep::AwaitServerFinal;
                    Ok(Next::Continue(SaslContinue { data: Bytes::from(msg) }))
                }
                ScramStep::AwaitServerFinal if step.complete => {
                    client.handle_server_final(&step.data)?;
                    done(step)
                }
                ScramStep::AwaitServerFirst | ScramStep::AwaitServerFinal => {
                    Err(SaslError::Unexpected("the broker ended the SCRAM exchange early or late"))
                }
                ScramStep::First | ScramStep::Done => Err(SaslError::Unexpected("a step outside the exchange")),
            },
        }
    }
}

/// When to start re-authenticating a session of `lifetime`: at 85 % to 95 % of it
/// (`jitter` in `[0, 1)` picks where), as Kafka's KIP-368 client does, leaving the last
/// 5 % or more for the exchange itself.
pub fn reauthenticate_after(lifetime: Duration, jitter: f64) -> Duration {
    lifetime.mul_f64(0.85 + 0.10 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
