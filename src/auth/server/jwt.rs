//! JWT bearer tokens (OAUTHBEARER) checked against a JWKS file.
//!
//! - Signature: RS256, ES256 (P-256) or EdDSA (Ed25519) with a key of the JWKS. The `alg`
//!   of the token must be one of those and must fit the key's type (and the key's own
//!   `alg`, when it names one); `none` and every HMAC algorithm are refused, so a public
//!   key can never be used as an HMAC secret. A token naming a `kid` is checked with that
//!   key only; without `kid`, with each key of the right type.
//! - Claims: `iss` equal to the configured issuer; `aud` (a string or an array) holding the
//!   configured audience; `exp` required and `nbf` optional, both with a small clock skew;
//!   the principal from `sub` or a configured claim (a non-empty string).
//!
//! Signature checking is `jsonwebtoken`'s (on `ring`); the claims are checked here, with
//! the time passed in, so that every case is a deterministic test.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::Refusal;

/// Clock skew allowed on `exp` and `nbf` by default (Kafka's OAUTHBEARER default too).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The shortest session a token gets, even when accepted inside the clock skew: time for
/// one re-authentication.
pub const MIN_SESSION: Duration = Duration::from_secs(1);

/// What a token must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtPolicy {
    /// Required `iss`.
    pub issuer: String,
    /// Required member of `aud`.
    pub audience: String,
    /// Claim holding the principal. Default `sub`.
    pub principal_claim: String,
    /// Skew allowed on `exp` and `nbf`. Default 30 s.
    pub clock_skew: Duration,
}

impl JwtPolicy {
    /// A policy with the default principal claim (`sub`) and clock skew.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> JwtPolicy {
        JwtPolicy {
            issuer: issuer.into(),
            audience: audience.into(),
            principal_claim: "sub".into(),
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The principal.
    pub principal: String,
    /// Milliseconds until the token expires (at least [`MIN_SESSION`]).
    pub lifetime_ms: u64,
}

/// Verifies bearer tokens against a JWKS.
pub struct JwtVerifier {
    keys: Vec<Key>,
    skipped: Vec<String>,
    policy: JwtPolicy,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("keys", &self.keys.len()).field("policy", &self.policy).finish()
    }
}

fn algorithm_of(jwk: &Jwk, index: usize) -> Result<Algorithm, String> {
    let at = |what: String| format!("JWKS key {index}: {what}");
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) => {
            return Err(at(format!("curve {:?} (only P-256, for ES256)", p.curve)))
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        AlgorithmParameters::OctetKeyPair(p) => {
            return Err(at(format!("curve {:?} (only Ed25519, for EdDSA)", p.curve)))
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(at(
                "a symmetric (oct) key: HMAC tokens are refused; only RSA, EC P-256 and Ed25519 public keys".into(),
            ))
        }
    };
    if let Some(named) = jwk.common.key_algorithm {
        let named = format!("{named:?}");
        if named != format!("{alg:?}") {
            return Err(at(format!("alg {named} does not fit the key (only {alg:?})")));
        }
    }
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err(at("\"use\" is not \"sig\"".into()));
    }
    Ok(alg)
}

impl JwtVerifier {
    /// A verifier from a JWKS document's text. Keys it cannot use for RS256, ES256 or
    /// EdDSA signatures (HMAC `oct` keys, other curves, encryption keys, a key whose `alg`
    /// does not fit) are left out and listed by [`JwtVerifier::skipped`]; a JWKS with no
    /// usable key is an error.
    pub fn from_jwks(json: &str, policy: JwtPolicy) -> Result<JwtVerifier, String> {
        if policy.issuer.is_empty() || policy.audience.is_empty() || policy.principal_claim.is_empty() {
            return Err("the JWT issuer, audience and principal claim must not be empty".into());
        }
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or("not a JWKS document: no \"keys\" array")?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let usable = serde_json::from_value::<Jwk>(entry.clone())
                .map_err(|e| format!("JWKS key {i}: not a supported JWK: {e}"))
                .and_then(|jwk| {
                    let alg = algorithm_of(&jwk, i)?;
                    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("JWKS key {i}: {e}"))?;
                    Ok(Key { kid: jwk.common.key_id.clone(), alg, key })
                });
            match usable {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push(e),
            }
        }
        if keys.is_empty() {
            return Err(format!("the JWKS has no usable signing key ({})", skipped.join("; ")));
        }
        Ok(JwtVerifier { keys, skipped, policy })
    }

    /// Why each left-out key of the JWKS was left out (for the broker's log).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Number of usable keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Reads a JWKS file.
    pub fn load(path: &Path, policy: JwtPolicy) -> Result<JwtVerifier, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        JwtVerifier::from_jwks(&text, policy).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The policy in force.
    pub fn policy(&self) -> &JwtPolicy {
        &self.policy
    }

    /// Verifies `token` at `now_unix_ms`.
    pub fn verify(&self, token: &str, now_unix_ms: u64) -> Result<VerifiedToken, Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::failed("token header unreadable or its alg is not allowed (none, unknown)"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(Refusal::failed("token alg is not RS256, ES256 or EdDSA"));
        }
        let candidates =
            self.keys.iter().filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid));
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = candidates
            .into_iter()
            .find_map(|k| jsonwebtoken::decode::<Value>(token, &k.key, &validation).ok())
            .ok_or_else(|| Refusal::failed("token signature not valid for any JWKS key of its alg and kid"))?
            .claims;
        self.check_claims(&claims, now_unix_ms)
    }

    fn check_claims(&self, claims: &Value, now_unix_ms: u64) -> Result<VerifiedToken, Refusal> {
        let p = &self.policy;
        let skew_ms = p.clock_skew.as_millis() as f64;
        let now = now_unix_ms as f64;
        if claims.get("iss").and_then(Value::as_str) != Some(p.issuer.as_str()) {
            return Err(Refusal::failed("token issuer is not the configured one"));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == p.audience,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(p.audience.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(Refusal::failed("token audience does not include the configured one"));
        }
        let exp_ms = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|s| s * 1000.0)
            .ok_or_else(|| Refusal::failed("token has no numeric exp"))?;
        if now >= exp_ms + skew_ms {
            return Err(Refusal::failed("token expired"));
        }
        match claims.get("nbf") {
            None => {}
            Some(v) => match v.as_f64() {
                Some(nbf) if now + skew_ms >= nbf * 1000.0 => {}
                Some(_) => return Err(Refusal::failed("token not valid yet (nbf)")),
                None => return Err(Refusal::failed("token nbf is not a number")),
            },
        }
        let principal = match claims.get(&p.principal_claim) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control) => s.clone(),
            _ => return Err(Refusal::failed("token lacks the principal claim (a non-empty string)")),
        };
        let lifetime_ms = ((exp_ms - now).max(0.0) as u64).max(MIN_SESSION.as_millis() as u64);
        Ok(VerifiedToken { principal, lifetime_ms })
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
