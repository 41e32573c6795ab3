//! The broker's side of authentication (cargo feature `broker`).
//!
//! - [`credentials`]: the users file (salted SCRAM data, never a password);
//! - [`dev_issuer`]: a development token issuer (Ed25519 key, JWKS, signed JWTs);
//! - [`scram`]: SCRAM server and PLAIN checked against the SCRAM data, with decoys so that
//!   an unknown user costs and answers the same as a wrong password;
//! - [`jwt`]: bearer tokens checked against a JWKS;
//! - [`limiter`]: failed attempts per source address;
//! - [`session`]: the shared [`AuthService`](session::AuthService) and each connection's
//!   [`ConnectionAuth`](session::ConnectionAuth) state machine (start, continue,
//!   re-authenticate, expire).

pub mod credentials;
pub mod dev_issuer;
pub mod jwt;
pub mod limiter;
pub mod scram;
pub mod session;

use crate::protocol::ErrorCode;

/// An authentication attempt the broker refuses.
///
/// `message` is what the client is told: for every credential failure it is the same
/// generic text, whatever the cause. `reason` and `user` are for the broker's log only;
/// `user` is set only for a user that exists (an unknown "user name" may be a password
/// typed in the wrong field, and must not reach the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The wire error code (50–59).
    pub code: ErrorCode,
    /// What the `Error` frame says.
    pub message: String,
    /// Why, for the log (never a secret).
    pub reason: &'static str,
    /// The existing user concerned, for the log.
    pub user: Option<String>,
}

/// The one message of every credential failure.
pub const GENERIC_FAILURE: &str = "authentication failed";

impl Refusal {
    /// A credential failure: [`ErrorCode::AuthenticationFailed`] with the generic message.
    pub fn failed(reason: &'static str) -> Refusal {
        Refusal { code: ErrorCode::AuthenticationFailed, message: GENERIC_FAILURE.into(), reason, user: None }
    }

    /// A refusal with its own code and message (state errors, throttling, mechanisms).
    pub fn other(code: ErrorCode, message: impl Into<String>, reason: &'static str) -> Refusal {
        Refusal { code, message: message.into(), reason, user: None }
    }

    /// Names the existing user concerned (for the log).
    pub fn for_user(mut self, user: Option<String>) -> Refusal {
        self.user = user;
        self
    }

    /// Whether this is a failed credential check (counted, rate-limited, logged).
    pub fn is_credential_failure(&self) -> bool {
        self.code == ErrorCode::AuthenticationFailed
    }
}

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
