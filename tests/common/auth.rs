//! Authentication fixtures: a users file (SCRAM credentials for alice and bob), a dev
//! token issuer with its JWKS, and the broker settings that use them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use qwire::auth::scram::ScramHash;
use qwire::auth::server::credentials::{ScramCredential, UserStore};
use qwire::auth::server::dev_issuer::{DevIssuer, TokenRequest};
use qwire::auth::Secret;
use qwire::broker::{AuthConfig, ClientAuth};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "qwire-test";
/// Passwords of the users file. Long and distinctive so that a log search finds them.
pub const ALICE_PASSWORD: &str = "alice-Pa55word-f7d1e9c3";
pub const BOB_PASSWORD: &str = "bob-Pa55word-2b8e4a60";

/// A users file and a JWKS in a temp directory.
pub struct AuthFiles {
    pub dir: tempfile::TempDir,
    pub users: PathBuf,
    pub jwks: PathBuf,
    pub issuer: DevIssuer,
}

impl AuthFiles {
    /// alice: SCRAM-SHA-256 and SCRAM-SHA-512; bob: SCRAM-SHA-512 only.
    pub fn new() -> AuthFiles {
        let dir = tempfile::tempdir().unwrap();
        let mut store = UserStore::default();
        for (name, pw, hashes) in [
            ("alice", ALICE_PASSWORD, &[ScramHash::Sha256, ScramHash::Sha512][..]),
            ("bob", BOB_PASSWORD, &[ScramHash::Sha512][..]),
        ] {
            for h in hashes {
                store.upsert(name, *h, ScramCredential::derive(*h, pw, 4096)).unwrap();
            }
        }
        let users = dir.path().join("users.toml");
        store.save(&users).unwrap();
        let issuer = DevIssuer::generate().unwrap();
        let (_, jwks) = issuer.save(dir.path()).unwrap();
        AuthFiles { dir, users, jwks, issuer }
    }

    /// Client certificates optional; PLAIN, SCRAM and OAUTHBEARER enabled.
    pub fn config(&self) -> AuthConfig {
        AuthConfig {
            client_auth: ClientAuth::Optional,
            users_file: Some(self.users.clone()),
            jwt_jwks: Some(self.jwks.clone()),
            jwt_issuer: Some(ISSUER.into()),
            jwt_audience: Some(AUDIENCE.into()),
            ..AuthConfig::default()
        }
    }

    /// Adds (or changes) a user in the users file.
    pub fn add_user(&self, name: &str, password: &str) {
        let mut store = UserStore::load(&self.users).unwrap();
        store.upsert(name, ScramHash::Sha256, ScramCredential::derive(ScramHash::Sha256, password, 4096)).unwrap();
        store.save(&self.users).unwrap();
    }

    /// A valid token for `sub`, expiring in `ttl`.
    pub fn token(&self, sub: &str, ttl: Duration) -> Secret {
        self.token_with(sub, ttl, ISSUER, AUDIENCE, &[])
    }

    /// A token with the given issuer, audience and extra (overriding) claims.
    pub fn token_with(&self, sub: &str, ttl: Duration, iss: &str, aud: &str, extra: &[(&str, Value)]) -> Secret {
        let req = TokenRequest {
            issuer: iss.into(),
            audience: aud.into(),
            subject: sub.into(),
            ttl,
            extra: extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        self.issuer.sign(&req, now_s()).unwrap()
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token with any header and claims, unsigned (`alg: none`) or signed with HMAC-SHA256.
pub fn raw_token(header: Value, claims: Value, hmac_secret: Option<&[u8]>) -> Secret {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = hmac_secret.map_or(String::new(), |k| {
        URL_SAFE_NO_PAD.encode(ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k), msg.as_bytes()))
    });
    Secret::new(format!("{msg}.{sig}"))
}

/// Claims that would be valid, for hand-made tokens.
pub fn valid_claims(sub: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now_s(), "exp": now_s() + 600})
}
