//! Authentication beyond client certificates: SASL PLAIN, SCRAM-SHA-256/512 and JWT bearer
//! tokens (OAUTHBEARER), carried in the hello exchange (`PROTOCOL.md` §19).
//!
//! Client certificates stay the default and the strongest way in. A broker started with
//! `--client-auth optional` also lets a client without a certificate in, provided it
//! authenticates with one of these mechanisms before any other request is served.
//!
//! Client side (always compiled, the producer needs it):
//! - [`scram`]: the SCRAM primitives and the client state machine (RFC 5802, RFC 7677);
//! - [`client`]: credentials, the per-exchange [`SaslClient`](client::SaslClient) that
//!   drives any mechanism, and when to re-authenticate;
//! - [`token`]: the [`TokenProvider`](token::TokenProvider) a producer calls for a fresh
//!   bearer token;
//! - [`Secret`]: a password or token that is wiped on drop and never printed.
//!
//! Server side (cargo feature `broker`): `server` holds the credentials file, the SCRAM
//! server, PLAIN checked against SCRAM data, JWT verification against a JWKS, the
//! per-address failure limiter and the per-connection authentication state.
//!
//! Every part is sans-IO: messages in, messages out, time passed in as a parameter.

pub mod client;
pub mod scram;
#[cfg(feature = "broker")]
pub mod server;
pub mod token;

use std::fmt;

use zeroize::Zeroizing;

/// A SASL mechanism qwire speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// RFC 4616: user name and password in one message. The broker checks the password
    /// against the salted SCRAM data of the credentials file. The password crosses the
    /// (TLS-protected) connection.
    Plain,
    /// RFC 7677 SCRAM with SHA-256: the password never crosses the connection.
    ScramSha256,
    /// SCRAM with SHA-512 (same exchange as RFC 7677 with SHA-512).
    ScramSha512,
    /// RFC 7628 bearer token: a JWT checked against the broker's JWKS.
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, in the order a broker lists them.
    pub const ALL: [Mechanism; 4] =
        [Mechanism::ScramSha512, Mechanism::ScramSha256, Mechanism::Plain, Mechanism::OAuthBearer];

    /// The registered SASL name, as carried in `SaslStart`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism with this SASL name (exact, upper case as registered).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash of a SCRAM mechanism.
    pub fn scram_hash(self) -> Option<scram::ScramHash> {
        match self {
            Mechanism::ScramSha256 => Some(scram::ScramHash::Sha256),
            Mechanism::ScramSha512 => Some(scram::ScramHash::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Mechanism, String> {
        Mechanism::from_name(&s.to_ascii_uppercase()).ok_or_else(|| {
            format!(
                "unknown SASL mechanism '{s}' (one of {})",
                Mechanism::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// A password or token: wiped from memory when dropped, printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret string.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret itself: pass it on, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(m.name().to_ascii_lowercase().parse::<Mechanism>().unwrap(), m);
        }
        assert!(Mechanism::from_name("scram-sha-256").is_none(), "wire names are exact");
        assert!("GSSAPI".parse::<Mechanism>().unwrap_err().contains("SCRAM-SHA-256"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }
}
