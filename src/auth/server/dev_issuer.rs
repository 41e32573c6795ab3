//! A development token issuer: an Ed25519 signing key, its JWKS, and signed JWTs, so
//! that OAUTHBEARER can be tried and tested without an identity provider (`qwire jwt`).
//! Like the certificates of `qwire certs`, for development only: a real deployment points
//! the broker at its identity provider's JWKS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::auth::Secret;

/// File name of the private key in a dev issuer directory.
pub const KEY_FILE: &str = "jwt-signing.key";
/// File name of the JWKS in a dev issuer directory.
pub const JWKS_FILE: &str = "jwks.json";

/// An Ed25519 key that signs development tokens.
pub struct DevIssuer {
    key: rcgen::KeyPair,
    kid: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// What a development token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `sub` (the principal, by default).
    pub subject: String,
    /// Time from `iat` to `exp`.
    pub ttl: Duration,
    /// Extra claims (overriding the ones above when they share a name).
    pub extra: serde_json::Map<String, Value>,
}

fn kid_of(key: &rcgen::KeyPair) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
}

impl DevIssuer {
    /// A new random key.
    pub fn generate() -> Result<DevIssuer, String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string())?;
        let kid = kid_of(&key);
        Ok(DevIssuer { key, kid })
    }

    /// Reads a key written by [`DevIssuer::save`] (PKCS#8 PEM).
    pub fn load(path: &Path) -> Result<DevIssuer, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        if !key.is_compatible(&rcgen::PKCS_ED25519) {
            return Err(format!("{}: not an Ed25519 key", path.display()));
        }
        let kid = kid_of(&key);
        Ok(DevIssuer { key, kid })
    }

    /// Writes `jwt-signing.key` (mode 0600) and `jwks.json` into `dir`; returns both paths.
    pub fn save(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join(KEY_FILE);
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&key_path)?;
        f.write_all(self.key.serialize_pem().as_bytes())?;
        let jwks_path = dir.join(JWKS_FILE);
        std::fs::write(&jwks_path, format!("{}\n", self.jwks()))?;
        Ok((key_path, jwks_path))
    }

    /// The key id (`kid`) tokens name: derived from the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWKS document.
    pub fn jwks(&self) -> String {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.key.public_key_raw()),
        }]})
        .to_string()
    }

    /// A signed token for `req`, issued at `now_unix_s`.
    pub fn sign(&self, req: &TokenRequest, now_unix_s: u64) -> Result<Secret, String> {
        let mut claims = json!({
            "iss": req.issuer, "aud": req.audience, "sub": req.subject,
            "iat": now_unix_s, "nbf": now_unix_s, "exp": now_unix_s + req.ttl.as_secs(),
        });
        if let Value::Object(map) = &mut claims {
            map.extend(req.extra.clone());
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ed_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).map(Secret::new).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::server::jwt::{JwtPolicy, JwtVerifier};

    #[test]
    fn dev_tokens_verify_against_the_dev_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = DevIssuer::generate().unwrap();
        let (key_path, jwks_path) = issuer.save(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = DevIssuer::load(&key_path).unwrap();
        assert_eq!(again.kid(), issuer.kid());
        let req = TokenRequest {
            issuer: "dev".into(),
            audience: "qwire".into(),
            subject: "alice".into(),
            ttl: Duration::from_secs(60),
            extra: serde_json::Map::new(),
        };
        let now = 1_700_000_000;
        let token = again.sign(&req, now).unwrap();
        let v = JwtVerifier::load(&jwks_path, JwtPolicy::new("dev", "qwire")).unwrap();
        let ok = v.verify(token.expose(), now * 1000).unwrap();
        assert_eq!((ok.principal.as_str(), ok.lifetime_ms), ("alice", 60_000));
        assert!(v.verify(token.expose(), (now + 120) * 1000).is_err(), "expired after its ttl and the skew");
        assert!(DevIssuer::load(&jwks_path).is_err());
    }
}
